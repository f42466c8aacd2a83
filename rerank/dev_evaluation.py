"""The dev evaluation of training: nDCG@10 of reranking each dev query's first-stage candidates, scored the
way esrerank's ``CrossEncoder`` scores (same max length, passage handling, batching and first-token last
layer), so the checkpoint training keeps is the one that reranks the real pipeline best."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .first_token import first_token_only
from .passages import PassageConfig, best_of_windows, window_pairs
from .tokens import MAX_BATCH_SIZE, TokenizedPairs, default_batch_tokens, length_batches, tokenize_pairs


def dev_evaluator_class():
    try:  # sentence-transformers 6 moved the evaluators' base class
        from sentence_transformers.base.evaluation.evaluator import BaseEvaluator
    except ImportError:
        from sentence_transformers.evaluation import SentenceEvaluator as BaseEvaluator

    class DevReranking(BaseEvaluator):
        """nDCG@10 (ir-measures) of reranking each dev query's first-stage candidates, reading documents
        as the pipeline will (``passages``). Samples: ``{"query", "positive": [...], "documents": [...]}``;
        positives the first stage missed stay missed but count in the ideal ranking."""

        def __init__(self, samples: Sequence[dict], max_length: int, passages: PassageConfig, bf16: bool = False,
                     name: str = "dev"):
            import ir_measures

            super().__init__()
            self.max_length, self.passages, self.name = max_length, passages, name
            self.bf16 = bf16  # score under bf16 autocast, as training runs (fast where the hardware has bf16)
            self.primary_metric = f"{name}_ndcg@10"
            # What does not change between evaluations is built once: the pairs, the judgments and the
            # first stage's own nDCG@10 (the line the curve compares against).
            self.pairs, self.qrels, self.doc_ids = [], {}, []
            for qi, sample in enumerate(samples):
                positives = list(sample["positive"])
                self.qrels[str(qi)] = {f"p{j}": 1 for j in range(len(positives))}
                for di, doc in enumerate(sample["documents"]):
                    # judged by text: a positive's id is its place among the positives
                    self.doc_ids.append((str(qi), f"p{positives.index(doc)}" if doc in positives else f"n{di}"))
                    self.pairs.append((sample["query"], doc))
            first_stage: dict[str, dict[str, float]] = {}
            for position, (qid, did) in enumerate(self.doc_ids):
                first_stage.setdefault(qid, {}).setdefault(did, float(-position))
            self.ndcg = ir_measures.nDCG @ 10
            self.first_stage_ndcg = float(ir_measures.calc_aggregate([self.ndcg], self.qrels, first_stage)[self.ndcg])
            self._tokens = None  # (tokenized pairs or windows, owner of each), on the first call (model's tokenizer)

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            import ir_measures

            if self._tokens is None:  # the same pairs every evaluation: tokenized once
                pairs, owner = self.pairs, np.arange(len(self.pairs))
                if self.passages.mode == "maxp":
                    pairs, owner = window_pairs(model.tokenizer, self.pairs, self.max_length, self.passages)
                with_types = "token_type_ids" in model.tokenizer.model_input_names
                self._tokens = (tokenize_pairs(model.tokenizer, pairs, self.max_length, with_types), owner)
            tokens, owner = self._tokens
            raw = score_tokenized(model.model, tokens, model.tokenizer.pad_token_id or 0, self.bf16)
            scores = best_of_windows(raw, owner, len(self.doc_ids))
            run: dict[str, dict[str, float]] = {}
            for (qid, did), score in zip(self.doc_ids, scores):
                run.setdefault(qid, {})[did] = max(float(score), run.get(qid, {}).get(did, -np.inf))
            ndcg = float(ir_measures.calc_aggregate([self.ndcg], self.qrels, run)[self.ndcg])
            metrics = {f"{self.name}_ndcg@10": ndcg,
                       f"{self.name}_first_stage_ndcg@10": self.first_stage_ndcg}
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return DevReranking


def score_tokenized(model, tokens: TokenizedPairs, pad_id: int, bf16: bool) -> np.ndarray:
    """Logits of a transformers sequence classifier (the model being trained) for every pair of ``tokens``,
    scored as esrerank's ``CrossEncoder`` scores: ``length_batches`` of its default token budget (4,096 on
    CPU, 65,536 on GPU), the last layer for the first token only (``first_token_only``: put back before
    returning), no gradients. The model is left in the mode it was in."""
    scores = np.empty(len(tokens), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        with first_token_only(model), torch.inference_mode(), torch.autocast(
                device_type=model.device.type, dtype=torch.bfloat16, enabled=bf16):
            for batch in length_batches(np.arange(len(tokens)), tokens.lengths,
                                        default_batch_tokens(model.device.type), MAX_BATCH_SIZE,
                                        cut_short=model.device.type == "cpu"):
                inputs = tokens.padded(batch, int(tokens.lengths[batch[0]]), pad_id)
                logits = model(**{name: torch.from_numpy(array).to(model.device) for name, array in inputs.items()})
                scores[batch] = logits.logits[:, 0].float().cpu().numpy()
    finally:
        model.train(was_training)
    return scores
