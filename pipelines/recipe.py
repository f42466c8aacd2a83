"""Mine → train → evaluate in one call: BM25 hard negatives, a trained cross-encoder, BM25 vs reranked.

This is where ``retrieval`` (candidates) and ``rerank`` (training) meet: the first stage's candidates
become training rows (``mining``) and the dev samples the trainer evaluates on, and the trained model is
evaluated in the real pipeline (BM25 top-k → rerank) with ``ir-measures``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import Collection
from retrieval.records import Query

from .evaluation import bootstrap_ci, compare, mean_scores, per_query_scores
from .fusion import FUSION_FILE, fused_run
from .mining import MiningConfig, dev_samples, mine_hard_negatives, save_mined, split_queries
from .retrieve_rerank import RetrieveRerank, first_stage_run
from .runs import Run

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class RecipeConfig:
    dev_queries: int = 200  # evaluation queries held out of the training queries when train and eval data are the same
    retrieve_k: int = 100  # BM25 candidates for mining and for the final evaluation
    train_eval_retrieve_k: int = 100  # candidates per dev query during training: as deep as the evaluation
    train_eval_queries: int = 100  # dev queries for training's evaluations, held out of the training queries
    rerank_k: int = 100
    seed: int = 12


def evaluate_reranker(reranker, queries: Sequence[Query], qrels, bm25_run: Run, texts: Mapping[str, str],
                      rerank_k: int) -> dict:
    """BM25 vs reranked (and fused) nDCG@10 etc. on ``queries``, with 95% bootstrap intervals, paired
    t-tests, and the interpolation weight tuned by 2-fold cross-validation over the queries."""
    qrels = {q.query_id: qrels[q.query_id] for q in queries if q.query_id in qrels}  # means over these queries
    head_scores = RetrieveRerank(None, reranker, retrieve_k=max(rerank_k, 1), rerank_k=rerank_k,
                                 texts=texts).head_scores(queries, bm25_run)
    bm25_per_query = per_query_scores(bm25_run, qrels)
    runs = {"reranked": fused_run(queries, bm25_run, head_scores, rerank_k, None, 1.0)}
    per_query = {"bm25": bm25_per_query, "reranked": per_query_scores(runs["reranked"], qrels)}
    alphas = [round(a, 2) for a in np.linspace(0.1, 1.0, 10)]
    fusion_scores = {}
    for fusion in ("interpolate", "rrf"):
        for alpha in alphas:
            run = fused_run(queries, bm25_run, head_scores, rerank_k, fusion, alpha)
            fusion_scores[(fusion, alpha)] = per_query_scores(run, qrels, ["nDCG@10"])["nDCG@10"]
    best_fusion = max(fusion_scores, key=lambda key: np.mean(list(fusion_scores[key].values())))
    cross_validated = _two_fold(fusion_scores, [q.query_id for q in queries])
    fused_values = list(cross_validated.values())
    result = {"queries": len(queries), "measures": {}, "significance": {}, "fusion": {
        "best_on_dev": {"fusion": best_fusion[0], "alpha": best_fusion[1],
                        "nDCG@10": float(np.mean(list(fusion_scores[best_fusion].values())))},
        "two_fold_cross_validated_nDCG@10": float(np.mean(fused_values)) if fused_values else 0.0,
        "two_fold_cross_validated_nDCG@10_ci95": bootstrap_ci(fused_values),
        "grid": {f"{f}:{a}": float(np.mean(list(v.values()))) for (f, a), v in fusion_scores.items()},
    }}
    for system, scores in per_query.items():
        result["measures"][system] = mean_scores(scores)
        values = list(scores["nDCG@10"].values())
        result["measures"][system]["nDCG@10_ci95"] = bootstrap_ci(values)
    for comparison in compare(per_query["bm25"], per_query["reranked"]):
        result["significance"][comparison.measure] = comparison.p_value
    return result


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
    BM25 vs the trained reranker on ``evaluation``'s queries (the held-out dev split when both are the
    same collection). Writes ``mined/``, ``model/`` and ``report.json`` under ``out_dir``.

    ``recipe`` and ``mining`` default to ``RecipeConfig()`` and ``MiningConfig()``.

    Returns:
        The report (also in ``report.json``): mining statistics, the training result, BM25 vs reranked
        measures with 95% intervals and paired t-tests, the fusion tuned by 2-fold cross-validation, and
        the time each stage took.

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

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    same = train.name == evaluation.name and train.queries == evaluation.queries
    train_queries, dev_queries = (split_queries(train.queries, recipe.dev_queries, recipe.seed) if same
                                  else (train.queries, evaluation.queries))
    (out_dir / "dev_query_ids.json").write_text(json.dumps([q.query_id for q in dev_queries]))
    logger.info("%d training queries, %d dev queries%s", len(train_queries), len(dev_queries),
                " (held out of the training data)" if same else "")

    # The dev queries training evaluates on (early stopping, best checkpoint) are held out of the training
    # queries too, so the queries the report is measured on never chose anything.
    train_queries, train_dev_queries = split_queries(train_queries, recipe.train_eval_queries, recipe.seed + 1)
    train_index = InMemoryBM25(train.documents, k1=k1, b=b, analyzer=analyzer)
    train_texts = train.texts()
    train_candidates = first_stage_run(train_index, train_queries + train_dev_queries,
                                       max(mining.retrieve_k, recipe.train_eval_retrieve_k))
    rows, stats = mine_hard_negatives(train_queries, train.qrels, train_candidates, train_texts, mining)
    dataset = save_mined(rows, stats, mining, out_dir / "mined")
    logger.info("mined %d rows: %s", len(rows), json.dumps(stats.summary()))
    mining_s = time.perf_counter() - started

    eval_index = train_index if evaluation is train or same else InMemoryBM25(evaluation.documents, k1=k1, b=b,
                                                                                 analyzer=analyzer)
    eval_texts = train_texts if eval_index is train_index else evaluation.texts()
    dev_run = first_stage_run(eval_index, dev_queries, max(recipe.retrieve_k, recipe.rerank_k))
    samples = dev_samples(train_dev_queries, train.qrels, train_candidates, train_texts, recipe.train_eval_retrieve_k)
    training = train_cross_encoder(dataset, base_model, out_dir / "model", training_config, samples, resume=resume)
    train_s = time.perf_counter() - started - mining_s

    reranker = CrossEncoder(str(out_dir / "model"))  # reads the max length and passages it was trained with
    evaluation_result = evaluate_reranker(reranker, dev_queries, evaluation.qrels, dev_run, eval_texts,
                                          recipe.rerank_k)
    fusion = evaluation_result["fusion"]
    reranked_alone = evaluation_result["measures"]["reranked"]["nDCG@10"]
    if reranked_alone <= evaluation_result["measures"]["bm25"]["nDCG@10"]:
        logger.warning("the reranker alone (nDCG@10 %.4f) is not better than BM25 (%.4f) on the evaluation queries",
                       reranked_alone, evaluation_result["measures"]["bm25"]["nDCG@10"])
    if fusion["two_fold_cross_validated_nDCG@10"] > reranked_alone:
        # what won on the evaluation split; `esrerank evaluate --fusion auto` applies it (the default is none)
        choice = {**fusion["best_on_dev"],
                  "two_fold_cross_validated_nDCG@10": fusion["two_fold_cross_validated_nDCG@10"],
                  "reranked_alone_nDCG@10": reranked_alone}
        (out_dir / "model" / FUSION_FILE).write_text(json.dumps(choice, indent=2) + "\n")
    report = {"mining": stats.summary(), "training": asdict(training), "evaluation": evaluation_result,
              "seconds": {"mining": mining_s, "training": train_s, "total": time.perf_counter() - started},
              "config": {"recipe": asdict(recipe), "mining": asdict(mining), "training": asdict(training_config),
                         "bm25": {"k1": k1, "b": b, "analyzer": analyzer}, "base_model": str(base_model)}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
