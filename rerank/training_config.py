"""Training settings, importable without torch (the CLI builds its flags from them at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from esrerank_errors import InputError

LOSSES = ("lambda", "bce", "listnet", "plistmle", "ranknet", "listmle", "margin-mse")
DISTILLATION_LOSSES = ("margin-mse", "listnet")  # the losses that learn a teacher's scores
LAMBDA_SCHEMES = ("ndcg2pp", "ndcg1", "ndcg2", "lambdarank", "none")
DEV_METRIC = "eval_dev_ndcg@10"
DEV_SAMPLES_FILE = "dev_samples.jsonl"  # written by mining beside the training rows, read by training


TRAIN_PASSAGES = ("first", "maxp")


LR_SCHEDULES = ("constant", "linear", "cosine")


def auto_batch_size(train_queries: int) -> int:
    """Queries per step when none is given: about one per 128 training queries, from 2 to 16. A few hundred
    queries get small steps and many of them (more updates for the same pairs); large collections get
    larger steps, which cost no more per pair and make each update less noisy."""
    return int(min(16, max(2, round(train_queries / 128))))


@dataclass(frozen=True)
class TrainingConfig:
    """How a cross-encoder is trained. Training runs until the dev curve stops rising, not for a fixed
    number of epochs: a budget of optimizer updates (``max_steps``) caps it, early stopping on dev nDCG@10
    ends it, and the best checkpoint is the one kept. What these defaults gave on SciFact (dev curve,
    200 held-out queries, time per step on a 2-core CPU) is in docs/training.md.

    loss: one of LOSSES (default ``lambda``: LambdaLoss). lambda_scheme: LambdaLoss weighting (default
        ``ndcg2pp``, the strongest in the LambdaLoss paper).
    max_steps: the most optimizer updates (default 1200). Early stopping normally ends training well before.
    epochs: an optional cap in passes over the training queries (default None: the budget alone decides).
    batch_size: queries per step for listwise losses, pairs per step for ``bce``. Default None:
        ``auto_batch_size`` (2 to 16, about one per 128 training queries).
    mini_batch_size: queries per forward pass inside the loss (default 8; lower it to save memory).
    lr: peak learning rate (default 1e-4), reached after ``warmup_steps`` (default 50) linear warmup.
    lr_schedule: after warmup, ``constant`` (default: the rate never decays to zero while the dev curve
        still rises; early stopping ends the run), ``linear`` or ``cosine`` decay to zero at ``max_steps``.
    max_length: tokens per pair (default 256). passages: ``first`` trains on the start of each document;
        ``maxp`` trains on each document's window that shares most words with the query and saves the
        model to be read as MaxP (best window) when reranking.
    attention_dropout: 0.0 (it was the largest training cost on CPU; dropout in the feed-forward layers
        stays). freeze_embeddings: keep the word-embedding table fixed (default True: a few hundred queries
        cannot move 30,522 word vectors usefully, and it saves their gradients and optimizer state).
    eval_steps: dev evaluation every N updates (default: twice an epoch, at most 64 updates apart; reranking
        100 dev queries' top 100 costs about 100 training steps of 4 lists on a CPU, so not more often).
    early_stopping_patience: stop after this many dev evaluations without a better nDCG@10 (default 3;
        ``None`` never stops early); the best checkpoint is the one kept either way.
    bf16: ``auto`` uses it on GPUs that have it and on CPUs where it was measured faster
        (``rerank.device.bf16_measured_faster``; docs/dtype_by_cpu.md). seed: 12."""

    loss: str = "lambda"
    lambda_scheme: str = "ndcg2pp"
    max_steps: int = 1200
    epochs: float | None = None
    batch_size: int | None = None
    mini_batch_size: int = 8
    lr: float = 1e-4
    warmup_steps: int = 50
    lr_schedule: str = "constant"
    max_length: int = 256
    passages: str = "first"
    attention_dropout: float = 0.0
    freeze_embeddings: bool = True
    eval_steps: int | None = None
    early_stopping_patience: int | None = 3
    bf16: str = "auto"
    seed: int = 12
    logging_steps: int = 10

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise InputError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lambda_scheme not in LAMBDA_SCHEMES:
            raise InputError(f"lambda_scheme must be one of {LAMBDA_SCHEMES}, got {self.lambda_scheme!r}")
        if self.passages not in TRAIN_PASSAGES:
            raise InputError(f"passages must be one of {TRAIN_PASSAGES}, got {self.passages!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.max_steps < 1:
            raise InputError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise InputError(f"early_stopping_patience must be None or at least 1, got {self.early_stopping_patience}")

    def steps_for(self, train_rows: int) -> tuple[int, int, int]:
        """(batch size, updates, dev-evaluation interval) for ``train_rows`` training rows."""
        batch = self.batch_size or auto_batch_size(train_rows)
        per_epoch = max(1, -(-train_rows // batch))
        steps = self.max_steps if self.epochs is None else min(self.max_steps, max(1, round(per_epoch * self.epochs)))
        interval = self.eval_steps or max(1, min(64, per_epoch // 2))
        return batch, steps, interval
