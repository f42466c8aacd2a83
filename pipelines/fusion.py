"""Combining first-stage and reranker scores, and putting a reranked head back in front of its tail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from esrerank_errors import DataError
from retrieval.records import Hit, Query

from .runs import Run

FUSION_FILE = "esrerank_fusion.json"  # the fusion chosen on a trained model's dev split, written by the recipe


RRF_K = 60  # the constant of Cormack et al. (2009)
FUSIONS = ("interpolate", "rrf")


def fuse(first_stage: Sequence[Hit], reranker_scores: np.ndarray, fusion: str | None, alpha: float) -> np.ndarray:
    """Combine first-stage and reranker scores of one query's reranked head."""
    if fusion is None or len(reranker_scores) == 0:
        return reranker_scores
    if fusion == "interpolate":
        def normalized(values):
            values = np.asarray(values, dtype=np.float64)
            spread = values.max() - values.min()
            return (values - values.min()) / spread if spread > 0 else np.zeros_like(values)
        return alpha * normalized(reranker_scores) + (1 - alpha) * normalized([h.score for h in first_stage])
    reranker_rank = np.empty(len(reranker_scores))
    reranker_rank[np.argsort(-reranker_scores, kind="stable")] = np.arange(1, len(reranker_scores) + 1)
    first_rank = np.arange(1, len(first_stage) + 1)
    return alpha / (RRF_K + reranker_rank) + (1 - alpha) / (RRF_K + first_rank)


def merge_head_and_tail(head: Sequence[Hit], head_scores: np.ndarray, tail: Sequence[Hit]) -> list[Hit]:
    order = np.argsort(-head_scores, kind="stable")  # ties keep first-stage order
    merged = [Hit(head[i].doc_id, float(head_scores[i]), rank) for rank, i in enumerate(order, start=1)]
    floor = float(head_scores.min()) if len(head_scores) else 0.0
    merged += [Hit(hit.doc_id, floor - offset, len(merged) + offset) for offset, hit in enumerate(tail, start=1)]
    return merged


def fused_run(queries: Sequence[Query], first_stage: Run, head_scores: Mapping[str, np.ndarray], rerank_k: int,
              fusion: str | None, alpha: float) -> Run:
    """Each query's reranked head (scores ``fuse``d with the first stage's; ``fusion=None``: the
    reranker's alone), followed by its first-stage tail."""
    run = {}
    for query in queries:
        hits = list(first_stage.get(query.query_id, []))
        head = hits[:rerank_k]
        scores = fuse(head, np.asarray(head_scores.get(query.query_id, np.zeros(0))), fusion, alpha)
        run[query.query_id] = merge_head_and_tail(head, scores, hits[rerank_k:])
    return run


def recorded_fusion(model_dir) -> tuple[str | None, float]:
    """The fusion (and weight) the recipe chose on the dev split and recorded beside a trained model; (None, 1.0)
    when none. A record that does not say it was chosen on a dev split is refused: the recipe of esrerank
    before 2026-12-07 chose it on the held-out queries, whose figures it would then inflate."""
    path = Path(model_dir) / FUSION_FILE
    if not path.is_file():
        return None, 1.0
    try:
        choice = json.loads(path.read_text())
        fusion, alpha, chosen_on = choice["fusion"], float(choice["alpha"]), choice.get("chosen_on")
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(path, f"is not a fusion record ({type(error).__name__}: {error})") from None
    if chosen_on != "dev":
        raise DataError(path, "does not say the fusion was chosen on a dev split (an older 'esrerank recipe' "
                              "chose it on held-out queries): run the recipe again, or give --fusion and --alpha")
    if fusion not in FUSIONS:
        raise DataError(path, f"names fusion {fusion!r}; expected one of {', '.join(FUSIONS)}")
    return fusion, alpha
