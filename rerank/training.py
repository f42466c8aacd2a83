"""Training cross-encoders with sentence-transformers' own trainer and losses.

This module only wires things together: the losses are sentence-transformers' (LambdaLoss with the
NDCG-Loss2++ scheme by default), the loop is its ``CrossEncoderTrainer`` (and so Hugging Face's
``Trainer``: checkpoints, resume, bf16, multi-GPU through ``torchrun``/``accelerate launch`` with no code
of ours), and the dev evaluation reranks the first stage's candidates of held-out queries exactly as
the pipeline will (same max length, same passage handling), so the checkpoint kept, and the point where
training stops, is the one that reranks the real pipeline best. What the model was trained with is saved
beside it (``esrerank_reranker.json``) and the training curve is drawn beside it (``training_curve.png``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from esrerank_errors import InputError

from .dev_evaluation import dev_evaluator_class
from .device import cpu_has_fast_bf16
from .passages import PassageConfig, RerankerSettings, split_windows
from .training_config import DEV_METRIC, DISTILLATION_LOSSES, LAMBDA_SCHEMES, LOSSES, TrainingConfig  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

CURVE_FILE = "training_curve.png"
FIRST_STAGE_METRIC = "eval_dev_first_stage_ndcg@10"
LOG_FILE = "training_log.json"

def make_loss(model, config: TrainingConfig):
    """The sentence-transformers loss the config names. Each call builds fresh objects: the weighting
    scheme default in ``LambdaLoss``'s signature is one shared instance, which we never rely on."""
    from sentence_transformers.cross_encoder import losses

    if config.loss == "lambda":
        scheme = {"ndcg2pp": losses.NDCGLoss2PPScheme, "ndcg1": losses.NDCGLoss1Scheme,
                  "ndcg2": losses.NDCGLoss2Scheme, "lambdarank": losses.LambdaRankScheme,
                  "none": losses.NoWeightingScheme}[config.lambda_scheme]()
        return losses.LambdaLoss(model, weighting_scheme=scheme, mini_batch_size=config.mini_batch_size)
    if config.loss == "bce":
        return losses.BinaryCrossEntropyLoss(model)
    if config.loss == "margin-mse":
        return losses.MarginMSELoss(model)
    listwise = {"listnet": losses.ListNetLoss, "plistmle": losses.PListMLELoss, "ranknet": losses.RankNetLoss,
                "listmle": losses.ListMLELoss}[config.loss]
    return listwise(model, mini_batch_size=config.mini_batch_size)


def to_pairs(dataset):
    """labeled-list rows → labeled-pair rows (``query``, ``passage``, ``label``), for pointwise losses."""
    import datasets

    rows = [{"query": row["query"], "passage": doc, "label": float(label)}
            for row in dataset for doc, label in zip(row["docs"], row["labels"])]
    return datasets.Dataset.from_list(rows)


def passage_config(config: TrainingConfig) -> PassageConfig:
    return PassageConfig(mode=config.passages)


_WORD = re.compile(r"\w+")


def best_windows(dataset, tokenizer, config: TrainingConfig):
    """labeled-list rows with each document replaced by its window (of the windows MaxP will score)
    that shares most distinct words with the query: the part of a long positive most likely to be why it
    is relevant, and the most query-like part of a negative. Ties go to the earlier window."""
    import datasets

    passages = passage_config(config)
    window = passages.window_tokens(config.max_length)
    rows = []
    for row in dataset:
        query_words = set(_WORD.findall(row["query"].lower()))
        docs = []
        for windows in split_windows(tokenizer, row["docs"], window, passages.overlap, passages.max_windows):
            overlaps = [len(query_words & set(_WORD.findall(text.lower()))) for text in windows]
            docs.append(windows[int(np.argmax(overlaps))])
        rows.append({"query": row["query"], "docs": docs, "labels": list(row["labels"])})
    return datasets.Dataset.from_list(rows)


def load_model(base_model: str, config: TrainingConfig, device: str | None = None):
    """A sentence-transformers CrossEncoder to train; a base encoder without a classification head gets a
    fresh one-label head."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    return STCrossEncoder(str(base_model), num_labels=1, max_length=config.max_length, device=device,
                          activation_fn=torch.nn.Identity(),
                          config_kwargs={"attention_probs_dropout_prob": config.attention_dropout})


SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class StepTimer(TrainerCallback):
    """Seconds of each optimizer update, dev evaluations and checkpoint saves left out: the figure to
    compare machines and settings by."""

    def __init__(self):
        self.seconds: list[float] = []
        self._began: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._began is not None:
            self.seconds.append(time.perf_counter() - self._began)
            self._began = None

    def median(self) -> float | None:
        return float(np.median(self.seconds)) if self.seconds else None


def teacher_labels(dataset, teacher):
    """labeled-list rows with each label replaced by ``teacher``'s score of (query, doc) (anything with
    ``predict(pairs)``): the targets of distillation, which needs no judgment."""
    import datasets

    rows = list(dataset)
    pairs = [(row["query"], doc) for row in rows for doc in row["docs"]]
    scores = np.asarray(teacher.predict(pairs), dtype=np.float64).reshape(-1)
    if len(scores) != len(pairs):
        raise InputError(f"the teacher returned {len(scores)} scores for {len(pairs)} pairs")
    out, at = [], 0
    for row in rows:
        count = len(row["docs"])
        out.append({"query": row["query"], "docs": list(row["docs"]), "labels": scores[at:at + count].tolist()})
        at += count
    return datasets.Dataset.from_list(out)


def margin_rows(dataset):
    """labeled-list rows → the (query, positive, negative_1..n) rows MarginMSE reads, labels the n+1
    scores: each list's best-labelled document first, then the others in their mined order, every row
    cut to the shortest list's length (the loss needs one width)."""
    import datasets

    rows = list(dataset)
    width = min(len(row["docs"]) for row in rows)
    if width < 2:
        raise InputError("margin-mse needs at least two documents in every training list")
    out = []
    for row in rows:
        best = int(np.argmax(row["labels"]))
        order = [best] + [i for i in range(len(row["docs"])) if i != best][: width - 1]
        out.append({"query": row["query"], "positive": row["docs"][order[0]],
                    **{f"negative_{n}": row["docs"][i] for n, i in enumerate(order[1:], start=1)},
                    "label": [float(row["labels"][i]) for i in order]})
    return datasets.Dataset.from_list(out)


def training_rows(dataset, config: TrainingConfig):
    """The rows ``config.loss`` reads, from labeled-list rows."""
    if config.loss == "bce":
        return to_pairs(dataset)
    if config.loss == "margin-mse":
        return margin_rows(dataset)
    return dataset


def use_bf16(setting: str) -> bool:
    if setting in ("true", "yes", "1"):
        return True
    if setting in ("false", "no", "0"):
        return False
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


@dataclass
class TrainingResult:
    out_dir: str
    best_checkpoint: str | None
    best_dev_ndcg10: float | None
    steps: int
    seconds: float
    train_rows: int
    batch_size: int = 0
    seconds_per_step: float | None = None  # median of the optimizer updates, evaluations left out
    first_stage_dev_ndcg10: float | None = None  # the dev candidates in the first stage's order

    @property
    def epochs(self) -> float:
        return self.steps * self.batch_size / self.train_rows if self.train_rows else 0.0

    @property
    def seconds_per_epoch(self) -> float | None:
        if self.seconds_per_step is None or not self.batch_size:
            return None
        return self.seconds_per_step * self.train_rows / self.batch_size

    def verdict(self) -> str:
        """One line: the best dev nDCG@10 against the first stage's own order of the same candidates."""
        if self.best_dev_ndcg10 is None or self.first_stage_dev_ndcg10 is None:
            return "no dev evaluation: nothing tells whether the reranker beats the first stage"
        gain = self.best_dev_ndcg10 - self.first_stage_dev_ndcg10
        line = (f"best dev nDCG@10 {self.best_dev_ndcg10:.4f} against the first stage's "
                f"{self.first_stage_dev_ndcg10:.4f} on the same candidates ({gain:+.4f})")
        if gain <= 0:
            line = "WARNING: the reranker is not above the first stage on the dev queries: " + line
        return line


def train_cross_encoder(train_dataset, base_model: str, out_dir, config: TrainingConfig | None = None,
                        dev_samples: list[dict] | None = None, resume: bool = False,
                        teacher=None) -> TrainingResult:
    """Train on ``train_dataset`` (labeled-list rows: ``query``, ``docs``, ``labels``), evaluate dev
    nDCG@10 over ``dev_samples`` (``{"query", "positive": [...], "documents": [...]}``, the first stage's
    candidates in order) every ``eval_steps``, stop early when it stops improving, keep the best
    checkpoint, and save it to ``out_dir``: a folder that esrerank's ``CrossEncoder``,
    sentence-transformers' ``CrossEncoder`` and transformers' ``AutoModel*`` all load, with the training
    settings (``esrerank_reranker.json``), log and curve beside it. Without dev samples the last step's
    model is saved, with a warning: nothing tells when training stopped helping.

    ``teacher`` (anything with ``predict(pairs)``, e.g. a stronger cross-encoder): distillation. Every
    mined document's label becomes the teacher's score, and the student learns them with ``margin-mse``
    (MarginMSE on the teacher's margins) or ``listnet`` (listwise distillation: the teacher's scores,
    softmaxed, are the target distribution); judgments are not needed."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from transformers import EarlyStoppingCallback

    config = config or TrainingConfig()
    # a teacher and the loss go together; refused before the model is loaded
    if teacher is not None and config.loss not in DISTILLATION_LOSSES:
        raise InputError(f"distillation from a teacher trains with {' or '.join(DISTILLATION_LOSSES)}, "
                         f"not {config.loss} (--loss)")
    if teacher is None and config.loss == "margin-mse":
        raise InputError("margin-mse learns a teacher's margins: give a teacher (--teacher MODEL)")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = load_model(base_model, config)
    if config.freeze_embeddings:
        model.model.get_input_embeddings().weight.requires_grad_(False)
    if config.passages == "maxp":
        train_dataset = best_windows(train_dataset, model.tokenizer, config)
    if teacher is not None:
        train_dataset = teacher_labels(train_dataset, teacher)
    train_dataset = training_rows(train_dataset, config)
    loss = make_loss(model, config)
    batch_size, max_steps, eval_steps = config.steps_for(len(train_dataset))
    evaluator = None
    bf16 = use_bf16(config.bf16)
    if dev_samples:
        evaluator = dev_evaluator_class()(dev_samples, config.max_length, passage_config(config), bf16=bf16)
    else:
        logger.warning("training without dev queries: no early stopping, no best checkpoint; the last step's "
                       "model is saved (give dev samples, or mine with a dev split, to avoid that)")
    logger.info("training on %d rows: %d a step, at most %d updates (%.1f epochs), dev evaluation every %d",
                len(train_dataset), batch_size, max_steps, max_steps * batch_size / len(train_dataset), eval_steps)
    checkpoints = out_dir / "checkpoints"
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints),
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=config.lr,
        warmup_steps=min(config.warmup_steps, max_steps),
        lr_scheduler_type=SCHEDULERS[config.lr_schedule],
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=config.seed,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if evaluator else "no",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=DEV_METRIC if evaluator else None,
        greater_is_better=True,
        dataloader_drop_last=False,
        report_to="none",
    )
    step_timer = StepTimer()
    callbacks = [step_timer]
    if evaluator is not None and config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator,
                                  callbacks=callbacks)
    resume_from = resume and any(checkpoints.glob("checkpoint-*"))
    if resume and not resume_from:
        logger.info("--resume: no checkpoint in %s yet, starting from the beginning", checkpoints)
    trainer.train(resume_from_checkpoint=True if resume_from else None)
    best_metric = trainer.state.best_metric
    if evaluator is not None and best_metric is None:
        # no evaluation ran (fewer steps than eval_steps): score the final model once. Otherwise the best
        # checkpoint, loaded at the end, was scored when it was saved; scoring it again costs a dev pass.
        best_metric = evaluator(model)["dev_ndcg@10"]
    model.save_pretrained(str(out_dir))
    RerankerSettings(max_length=config.max_length, passages=passage_config(config)).save(out_dir)
    history = trainer.state.log_history
    (out_dir / LOG_FILE).write_text(json.dumps(history, indent=1) + "\n")
    title = (f"{config.loss} loss, lr {config.lr:g} {config.lr_schedule}, {batch_size} lists a step, "
             f"max length {config.max_length}")
    plot_training_curve(history, out_dir / CURVE_FILE, title=title)
    result = TrainingResult(out_dir=str(out_dir), best_checkpoint=trainer.state.best_model_checkpoint,
                            best_dev_ndcg10=best_metric, steps=trainer.state.global_step,
                            seconds=time.perf_counter() - started, train_rows=len(train_dataset),
                            batch_size=batch_size, seconds_per_step=step_timer.median(),
                            first_stage_dev_ndcg10=evaluator.first_stage_ndcg if evaluator is not None else None)
    (out_dir / "esrerank_training.json").write_text(json.dumps({"config": asdict(config), "result": {
        **asdict(result), "epochs": result.epochs, "seconds_per_epoch": result.seconds_per_epoch},
                                                                "bf16": bf16, "base_model": str(base_model)},
                                                               indent=2) + "\n")
    return result


def plot_training_curve(log_history: list[dict], path, title: str = "") -> Path | None:
    """Training loss and dev nDCG@10 per evaluation against the step, as a PNG (matplotlib). Returns the
    path, or None when matplotlib is missing or nothing was logged."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no training curve drawn")
        return None
    losses = [(e["step"], e["loss"]) for e in log_history if "loss" in e]
    dev = [(e["step"], e[DEV_METRIC]) for e in log_history if DEV_METRIC in e]
    if not losses and not dev:
        return None
    figure, loss_axis = plt.subplots(figsize=(7, 4))
    if losses:
        loss_axis.plot(*zip(*losses), color="tab:blue", label="training loss")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    if dev:
        dev_axis = loss_axis.twinx()
        dev_axis.plot(*zip(*dev), color="tab:red", marker="o", label="dev nDCG@10")
        best_step, best = max(dev, key=lambda point: point[1])
        dev_axis.axvline(best_step, color="tab:red", linestyle=":", linewidth=1)
        dev_axis.annotate(f"best {best:.3f}", (best_step, best), textcoords="offset points", xytext=(-58, 4),
                          color="tab:red", fontsize=8)
        first_stage = [e[FIRST_STAGE_METRIC] for e in log_history if FIRST_STAGE_METRIC in e]
        if first_stage:
            dev_axis.axhline(first_stage[-1], color="gray", linestyle="--", linewidth=1)
            dev_axis.annotate(f"first stage (BM25) {first_stage[-1]:.3f}", (dev[0][0], first_stage[-1]),
                              textcoords="offset points", xytext=(0, 4), color="gray", fontsize=8)
        dev_axis.set_ylabel("dev nDCG@10 (first-stage candidates reranked)", color="tab:red")
    loss_axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
