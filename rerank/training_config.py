"""Training settings, importable without torch (the CLI builds its flags from them at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

LOSSES = ("lambda", "bce", "listnet", "plistmle", "ranknet", "listmle")
LAMBDA_SCHEMES = ("ndcg2pp", "ndcg1", "ndcg2", "lambdarank", "none")
DEV_METRIC = "eval_dev_ndcg@10"
DEV_SAMPLES_FILE = "dev_samples.jsonl"  # written by mining beside the training rows, read by training


TRAIN_PASSAGES = ("first", "maxp")


@dataclass(frozen=True)
class TrainingConfig:
    """Every default was chosen on a dev split held out of SciFact's training queries and confirmed on a
    second held-out split (README, "Training defaults"); the figures below are from those runs.

    loss: one of LOSSES (default ``lambda``: LambdaLoss, beat BCE and ListNet at the same budget).
    lambda_scheme: LambdaLoss weighting (default ``ndcg2pp``, the strongest in the LambdaLoss paper).
    epochs: 1 (default). Several epochs over a few hundred queries memorise the training lists: three
        epochs at batch 8 drove the loss from 1.3 to 0.3 and left the reranker at BM25's level on new
        queries. batch_size: queries per step for listwise losses, pairs per step for ``bce`` (default 4:
        more, smaller steps in the one epoch). mini_batch_size: queries per forward pass inside the loss
        (default 8; lower it to save memory). lr: 5e-5 with 10% warmup then linear decay.
    max_length: tokens per pair (default 256; 384 trains ~1.6x slower on CPU). passages: ``first`` trains on
        the start of each document; ``maxp`` trains on each document's window that shares most words
        with the query and saves the model to be read as MaxP (best window) when reranking.
    attention_dropout: 0.0 (it was the largest training cost on CPU; dropout in the feed-forward layers
        stays). eval_steps: dev evaluations every N steps (default: 4 per epoch).
    early_stopping_patience: stop after this many dev evaluations without a better nDCG@10 (default 3;
        ``None`` never stops early); the best checkpoint is the one kept either way.
    bf16: ``auto`` uses it on GPUs that have it and on CPUs where it was measured faster (AMX; AMD with
    AVX512-BF16: ``rerank.device.cpu_has_fast_bf16``). seed: 12."""

    loss: str = "lambda"
    lambda_scheme: str = "ndcg2pp"
    epochs: float = 1.0
    batch_size: int = 4
    mini_batch_size: int = 8
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    max_length: int = 256
    passages: str = "first"
    attention_dropout: float = 0.0
    eval_steps: int | None = None
    early_stopping_patience: int | None = 3
    bf16: str = "auto"
    seed: int = 12
    logging_steps: int = 10

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lambda_scheme not in LAMBDA_SCHEMES:
            raise ValueError(f"lambda_scheme must be one of {LAMBDA_SCHEMES}, got {self.lambda_scheme!r}")
        if self.passages not in TRAIN_PASSAGES:
            raise ValueError(f"passages must be one of {TRAIN_PASSAGES}, got {self.passages!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be None or at least 1, got {self.early_stopping_patience}")
