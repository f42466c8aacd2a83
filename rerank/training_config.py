"""Training settings, importable without torch (the CLI builds its flags from them at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

LOSSES = ("lambda", "bce", "listnet", "plistmle", "ranknet", "listmle")
LAMBDA_SCHEMES = ("ndcg2pp", "ndcg1", "ndcg2", "lambdarank", "none")
DEV_METRIC = "eval_dev_ndcg@10"


@dataclass(frozen=True)
class TrainingConfig:
    """loss: one of LOSSES (default ``lambda``). lambda_scheme: LambdaLoss weighting (default ``ndcg2pp``,
    the strongest in the LambdaLoss paper). epochs: 3, batch_size: queries per step for listwise losses,
    pairs per step for ``bce`` (default 8). mini_batch_size: queries per forward pass inside the loss
    (default 8; lower it to save memory). lr: 1e-4 (warmup 10%). On SciFact (609 training queries) one
    epoch at 2e-5 left all-MiniLM-L6-v2 with a fresh head near random (dev nDCG@10 0.26 on BM25's top
    30); three epochs at 1e-4 reached 0.69 there. max_length: tokens per pair (256: 71%
    of SciFact abstracts are longer, but 384 trains ~2.2x slower on CPU). attention_dropout: 0.0 (it was
    the largest training cost on CPU; dropout in the feed-forward layers stays). eval_steps: dev
    evaluations every N steps (default: 4 per epoch). bf16: ``auto`` uses it on GPUs that have it and on
    CPUs with AMX/AVX512-BF16. seed: 12."""

    loss: str = "lambda"
    lambda_scheme: str = "ndcg2pp"
    epochs: float = 3.0
    batch_size: int = 8
    mini_batch_size: int = 8
    lr: float = 1e-4
    warmup_ratio: float = 0.1
    max_length: int = 256
    attention_dropout: float = 0.0
    eval_steps: int | None = None
    bf16: str = "auto"
    seed: int = 12
    logging_steps: int = 10

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lambda_scheme not in LAMBDA_SCHEMES:
            raise ValueError(f"lambda_scheme must be one of {LAMBDA_SCHEMES}, got {self.lambda_scheme!r}")
