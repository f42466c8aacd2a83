"""Training cross-encoders with sentence-transformers' own trainer and losses.

This module only wires things together: the losses are sentence-transformers' (LambdaLoss with the
NDCG-Loss2++ scheme by default), the loop is its ``CrossEncoderTrainer`` (and so Hugging Face's
``Trainer``: checkpoints, resume, bf16, multi-GPU through ``torchrun``/``accelerate launch`` with no code
of ours), and the dev evaluation is its ``CrossEncoderRerankingEvaluator`` over the first stage's
candidates, so the checkpoint kept is the one that reranks the real pipeline best.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .device import cpu_has_fast_bf16
from .training_config import DEV_METRIC, LAMBDA_SCHEMES, LOSSES, TrainingConfig  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)




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
    listwise = {"listnet": losses.ListNetLoss, "plistmle": losses.PListMLELoss, "ranknet": losses.RankNetLoss,
                "listmle": losses.ListMLELoss}[config.loss]
    return listwise(model, mini_batch_size=config.mini_batch_size)


def to_pairs(dataset):
    """labeled-list rows → labeled-pair rows (``query``, ``passage``, ``label``), for pointwise losses."""
    import datasets

    rows = [{"query": row["query"], "passage": doc, "label": float(label)}
            for row in dataset for doc, label in zip(row["docs"], row["labels"])]
    return datasets.Dataset.from_list(rows)


def load_model(base_model: str, config: TrainingConfig, device: str | None = None):
    """A sentence-transformers CrossEncoder to train; a base encoder without a classification head gets a
    fresh one-label head."""
    from sentence_transformers import CrossEncoder as STCrossEncoder

    return STCrossEncoder(str(base_model), num_labels=1, max_length=config.max_length, device=device,
                          activation_fn=torch.nn.Identity(),
                          config_kwargs={"attention_probs_dropout_prob": config.attention_dropout})


def _warmup(ratio: float) -> dict:
    """transformers 5 takes the warmup ratio as a float ``warmup_steps`` (``warmup_ratio`` is deprecated)."""
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        return {"warmup_steps": float(ratio)}
    return {"warmup_ratio": ratio}


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


def train_cross_encoder(train_dataset, base_model: str, out_dir, config: TrainingConfig = TrainingConfig(),
                        dev_samples: list[dict] | None = None, resume: bool = False) -> TrainingResult:
    """Train on ``train_dataset`` (labeled-list rows: ``query``, ``docs``, ``labels``), keep the checkpoint
    with the best dev nDCG@10 over ``dev_samples`` (``{"query", "positive": [...], "documents": [...]}``,
    the first stage's candidates in order), and save it to ``out_dir``: a folder that esrerank's
    ``CrossEncoder``, sentence-transformers' ``CrossEncoder`` and transformers' ``AutoModel*`` all load."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    out_dir = Path(out_dir)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model = load_model(base_model, config)
    if config.loss == "bce":
        train_dataset = to_pairs(train_dataset)
    loss = make_loss(model, config)
    steps_per_epoch = max(1, -(-len(train_dataset) // config.batch_size))
    eval_steps = config.eval_steps or max(1, steps_per_epoch // 4)
    evaluator = None
    if dev_samples:
        evaluator = CrossEncoderRerankingEvaluator(dev_samples, at_k=10, always_rerank_positives=False, name="dev",
                                                   batch_size=64, write_csv=False)
    bf16 = use_bf16(config.bf16)
    checkpoints = out_dir / "checkpoints"
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        **_warmup(config.warmup_ratio),
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
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss, evaluator=evaluator)
    resume_from = resume and any(checkpoints.glob("checkpoint-*"))
    if resume and not resume_from:
        logger.info("--resume: no checkpoint in %s yet, starting from the beginning", checkpoints)
    trainer.train(resume_from_checkpoint=True if resume_from else None)
    best_metric = trainer.state.best_metric
    if evaluator is not None:
        final = evaluator(model)  # the best checkpoint is loaded at the end; record its score
        best_metric = final.get("dev_ndcg@10", best_metric)
    model.save_pretrained(str(out_dir))
    result = TrainingResult(out_dir=str(out_dir), best_checkpoint=trainer.state.best_model_checkpoint,
                            best_dev_ndcg10=best_metric, steps=trainer.state.global_step,
                            seconds=time.perf_counter() - started, train_rows=len(train_dataset))
    (out_dir / "esrerank_training.json").write_text(json.dumps({"config": asdict(config), "result": asdict(result),
                                                                "bf16": bf16, "base_model": str(base_model)},
                                                               indent=2) + "\n")
    return result
