"""Mine → train → evaluate in one call: :func:`mine_collection` (BM25 hard negatives and a dev split),
:func:`train_cross_encoder`, then :func:`evaluate` on held-out queries, plus the fusion weight tuned by
two-fold cross-validation over those queries. Nothing here that ``esrerank mine``, ``train`` and
``evaluate`` do not do themselves.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from retrieval.corpus import Collection
from retrieval.records import Query

from .evaluation import FIRST_STAGE, RERANKED, bootstrap_ci, per_query_scores
from .experiment import EvaluationResult, evaluate, select_queries
from .fusion import FUSION_FILE, fused_run
from .mining import MiningConfig, load_dev_samples, load_mined, mine_collection, split_queries
from .retrieve_rerank import RerankConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipeConfig:
    """heldout_queries: queries held out for the final evaluation when training and evaluation data are the
    same collection (default 200). dev_queries: queries held out of training for its dev split (early
    stopping, best checkpoint; default 100). retrieve_k: first-stage candidates per query for mining and
    the final evaluation (default 100). dev_retrieve_k: candidates per dev query (default 100, as deep as
    the evaluation reranks). rerank_k: candidates reranked in the final evaluation (default 100).
    seed: the held-out split's (default 12)."""

    heldout_queries: int = 200
    dev_queries: int = 100
    retrieve_k: int = 100
    dev_retrieve_k: int = 100
    rerank_k: int = RerankConfig.rerank_k
    seed: int = 12


def fusion_report(queries: Sequence[Query], qrels, result: EvaluationResult, rerank_k: int) -> dict:
    """The fusion of the first stage's and the reranker's scores on ``queries``: every (fusion, alpha) of a
    grid, the best, and the nDCG@10 of the weight tuned by 2-fold cross-validation (tuned on one half of the
    queries, scored on the other), which is what a user choosing the weight on these queries would get."""
    heads = {}
    for query in queries:  # the reranker's scores of the first stage's head, in first-stage order
        scores = {hit.doc_id: hit.score for hit in result.final.get(query.query_id, [])[:rerank_k]}
        heads[query.query_id] = np.array([scores[hit.doc_id] for hit in
                                          result.first_stage.get(query.query_id, [])[:rerank_k]])
    alphas = [round(a, 2) for a in np.linspace(0.1, 1.0, 10)]
    fusion_scores = {}
    for fusion in ("interpolate", "rrf"):
        for alpha in alphas:
            run = fused_run(queries, result.first_stage, heads, rerank_k, fusion, alpha)
            fusion_scores[(fusion, alpha)] = per_query_scores(run, qrels, ["nDCG@10"])["nDCG@10"]
    best = max(fusion_scores, key=lambda key: np.mean(list(fusion_scores[key].values())))
    fused_values = list(_two_fold(fusion_scores, [q.query_id for q in queries]).values())
    return {"best_on_dev": {"fusion": best[0], "alpha": best[1],
                            "nDCG@10": float(np.mean(list(fusion_scores[best].values())))},
            "two_fold_cross_validated_nDCG@10": float(np.mean(fused_values)) if fused_values else 0.0,
            "two_fold_cross_validated_nDCG@10_ci95": bootstrap_ci(fused_values),
            "grid": {f"{f}:{a}": float(np.mean(list(v.values()))) for (f, a), v in fusion_scores.items()}}


def _two_fold(fusion_scores: dict, query_ids: list[str]) -> dict[str, float]:
    """Tune on one half of the queries, score on the other, both ways: an unbiased fused nDCG@10 per query."""
    halves = [query_ids[0::2], query_ids[1::2]]
    scores: dict[str, float] = {}
    for tune, test in ((halves[0], halves[1]), (halves[1], halves[0])):
        if not tune:
            continue
        best = max(fusion_scores, key=lambda key: np.mean([fusion_scores[key][q] for q in tune]))
        scores.update({q: fusion_scores[best][q] for q in test})
    return scores


def run_recipe(train: Collection, evaluation: Collection, base_model: str, out_dir, training_config,
               recipe: RecipeConfig | None = None, mining: MiningConfig | None = None,
               k1: float = 0.9, b: float = 0.4, analyzer: str = "english", resume: bool = False) -> dict:
    """Mine hard negatives from BM25 on ``train``, train a cross-encoder from ``base_model``, evaluate
    BM25 vs the trained reranker on ``evaluation``'s queries (a held-out split of ``train``'s queries when
    both are the same collection). Writes ``mined/``, ``model/``, ``heldout_query_ids.json`` and
    ``report.json`` under ``out_dir``.

    ``recipe`` and ``mining`` default to ``RecipeConfig()`` and ``MiningConfig()``.

    Returns:
        The report (also in ``report.json``): mining statistics, the training result, first stage vs
        reranked measures with 95% intervals and paired t-tests, the fusion tuned by 2-fold cross-validation,
        and the time each stage took.

    Example::

        from retrieval import load_collection
        from rerank.training_config import TrainingConfig
        from pipelines.recipe import run_recipe

        data = load_collection("scifact-train", "train")
        report = run_recipe(data, data, "path/to/all-MiniLM-L6-v2", "runs/scifact", TrainingConfig())
        print(report["evaluation"]["measures"]["reranked"]["nDCG@10"])
    """
    recipe = recipe or RecipeConfig()
    mining = mining or MiningConfig()
    from rerank.cross_encoder import CrossEncoder
    from rerank.training import train_cross_encoder
    from retrieval.bm25 import InMemoryBM25

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    same = train.name == evaluation.name and train.queries == evaluation.queries
    heldout = (split_queries(train.queries, recipe.heldout_queries, recipe.seed)[1] if same
               else evaluation.queries)
    heldout_ids = [q.query_id for q in heldout]
    (out_dir / "heldout_query_ids.json").write_text(json.dumps(heldout_ids))
    logger.info("%d held-out queries for the final evaluation%s", len(heldout),
                " (held out of the training data)" if same else "")

    train_index = InMemoryBM25(train.documents, k1=k1, b=b, analyzer=analyzer)
    mined = mine_collection(train, train_index, out_dir / "mined", mining, dev_queries=recipe.dev_queries,
                            dev_retrieve_k=recipe.dev_retrieve_k, exclude=set(heldout_ids) if same else None,
                            first_stage_description=f"in-memory BM25 (k1={k1}, b={b}, analyzer={analyzer})",
                            dev_seed=recipe.seed + 1)
    logger.info("mined %s: %s", mined.out_dir, json.dumps(mined.summary))
    mining_s = time.perf_counter() - started

    samples = load_dev_samples(mined.dev_samples_path) if mined.dev_samples_path else None
    training = train_cross_encoder(load_mined(mined.out_dir), base_model, out_dir / "model", training_config,
                                   samples, resume=resume)
    train_s = time.perf_counter() - started - mining_s

    reranker = CrossEncoder(str(out_dir / "model"))  # reads the max length and passages it was trained with
    heldout_collection = select_queries(evaluation, set(heldout_ids))
    eval_index = (train_index if same else
                  InMemoryBM25(evaluation.documents, k1=k1, b=b, analyzer=analyzer))
    result = evaluate(heldout_collection, eval_index, reranker, retrieve_k=max(recipe.retrieve_k, recipe.rerank_k),
                      rerank=RerankConfig(rerank_k=recipe.rerank_k))
    evaluation_report = {"queries": len(heldout), "measures": {}, "significance": {},
                         "fusion": fusion_report(heldout_collection.queries, heldout_collection.qrels, result,
                                                 recipe.rerank_k)}
    for system, scores in result.per_query.items():
        evaluation_report["measures"][system] = {**result.measures[system],
                                                 "nDCG@10_ci95": bootstrap_ci(list(scores["nDCG@10"].values()))}
    for comparison in result.comparisons:
        evaluation_report["significance"][comparison.measure] = comparison.p_value
    fusion = evaluation_report["fusion"]
    reranked_alone = result.measures[RERANKED]["nDCG@10"]
    if reranked_alone <= result.measures[FIRST_STAGE]["nDCG@10"]:
        logger.warning("the reranker alone (nDCG@10 %.4f) is not better than BM25 (%.4f) on the held-out queries",
                       reranked_alone, result.measures[FIRST_STAGE]["nDCG@10"])
    if fusion["two_fold_cross_validated_nDCG@10"] > reranked_alone:
        # what won on the held-out split; `esrerank evaluate --fusion auto` applies it (the default is none)
        choice = {**fusion["best_on_dev"],
                  "two_fold_cross_validated_nDCG@10": fusion["two_fold_cross_validated_nDCG@10"],
                  "reranked_alone_nDCG@10": reranked_alone}
        (out_dir / "model" / FUSION_FILE).write_text(json.dumps(choice, indent=2) + "\n")
    report = {"mining": mined.summary, "training": asdict(training), "evaluation": evaluation_report,
              "seconds": {"mining": mining_s, "training": train_s, "total": time.perf_counter() - started},
              "config": {"recipe": asdict(recipe), "mining": asdict(mining), "training": asdict(training_config),
                         "bm25": {"k1": k1, "b": b, "analyzer": analyzer}, "base_model": str(base_model)}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
