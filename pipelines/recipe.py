"""Mine → train → evaluate in one call: :func:`mine_collection` (BM25 hard negatives and a dev split),
:func:`train_cross_encoder`, the fusion weight chosen on the dev split (:func:`choose_fusion`), then
:func:`evaluate` on held-out queries, where the chosen fusion is applied and reported beside the reranker
alone. Nothing is chosen on the held-out queries. Nothing here that ``esrerank mine``, ``train`` and
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
from .fusion import FUSION_FILE, FUSIONS, fused_run
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


FUSION_ALPHAS = tuple(round(float(a), 2) for a in np.linspace(0.1, 1.0, 10))
"""The reranker weights the recipe tries for each fusion."""


def fusion_grid(queries: Sequence[Query], qrels, result: EvaluationResult, rerank_k: int) -> dict:
    """nDCG@10 per query of every (fusion, alpha) of the grid (interpolate and RRF, alpha 0.1 … 1.0) on
    ``queries``: ``{(fusion, alpha): {query_id: nDCG@10}}``."""
    heads = _reranker_heads(queries, result, rerank_k)
    grid = {}
    for fusion in FUSIONS:
        for alpha in FUSION_ALPHAS:
            run = fused_run(queries, result.first_stage, heads, rerank_k, fusion, alpha)
            grid[(fusion, alpha)] = per_query_scores(run, qrels, ["nDCG@10"])["nDCG@10"]
    return grid


def _reranker_heads(queries: Sequence[Query], result: EvaluationResult, rerank_k: int) -> dict[str, np.ndarray]:
    """The reranker's scores of each query's first-stage head, in first-stage order (what ``fused_run`` takes)."""
    heads = {}
    for query in queries:
        scores = {hit.doc_id: hit.score for hit in result.final.get(query.query_id, [])[:rerank_k]}
        heads[query.query_id] = np.array([scores[hit.doc_id] for hit in
                                          result.first_stage.get(query.query_id, [])[:rerank_k]])
    return heads


def choose_fusion(queries: Sequence[Query], qrels, result: EvaluationResult, rerank_k: int) -> dict:
    """The fusion weight chosen on the dev split: the (fusion, alpha) of the grid with the best mean nDCG@10 on
    ``queries`` (the dev queries, never held-out ones), beside the reranker alone on the same queries.

    Returns:
        ``{"chosen_on": "dev", "queries", "fusion", "alpha", "nDCG@10", "reranked_alone_nDCG@10", "grid"}``;
        ``beats_reranker_alone`` says whether the fusion is worth recording for ``evaluate --fusion auto``.
    """
    grid = fusion_grid(queries, qrels, result, rerank_k)
    means = {key: float(np.mean(list(values.values()))) for key, values in grid.items()}
    best = max(means, key=means.get)  # the first of equal means: the grid's order (interpolate, lowest alpha)
    alone = result.measures[RERANKED]["nDCG@10"]
    return {"chosen_on": "dev", "queries": len(queries), "fusion": best[0], "alpha": best[1],
            "nDCG@10": means[best], "reranked_alone_nDCG@10": alone, "beats_reranker_alone": means[best] > alone,
            "grid": {f"{fusion}:{alpha}": value for (fusion, alpha), value in means.items()}}


def fused_heldout(queries: Sequence[Query], qrels, result: EvaluationResult, rerank_k: int, choice: dict) -> dict:
    """The fusion chosen on the dev split applied, unchanged, to the held-out queries: its nDCG@10 and 95%
    interval, to report beside the reranker alone (nothing is chosen here)."""
    run = fused_run(queries, result.first_stage, _reranker_heads(queries, result, rerank_k), rerank_k,
                    choice["fusion"], choice["alpha"])
    values = list(per_query_scores(run, qrels, ["nDCG@10"])["nDCG@10"].values())
    return {"fusion": choice["fusion"], "alpha": choice["alpha"], "chosen_on": "dev",
            "nDCG@10": float(np.mean(values)) if values else 0.0, "nDCG@10_ci95": bootstrap_ci(values)}


def run_recipe(train: Collection, evaluation: Collection, base_model: str, out_dir, training_config,
               recipe: RecipeConfig | None = None, mining: MiningConfig | None = None,
               k1: float = 0.9, b: float = 0.4, analyzer: str = "english", resume: bool = False) -> dict:
    """Mine hard negatives from BM25 on ``train``, train a cross-encoder from ``base_model``, evaluate
    BM25 vs the trained reranker on ``evaluation``'s queries (a held-out split of ``train``'s queries when
    both are the same collection). Writes ``mined/``, ``model/``, ``heldout_query_ids.json`` and
    ``report.json`` under ``out_dir``.

    ``recipe`` and ``mining`` default to ``RecipeConfig()`` and ``MiningConfig()``.

    Returns:
        The report (also in ``report.json``): mining statistics, the training result, the fusion chosen on
        the dev split (``fusion_choice``: the grid's dev nDCG@10s; None without a dev split), first stage vs
        reranked measures on the held-out queries with 95% intervals and paired t-tests, the dev-chosen
        fusion applied to them (``evaluation.fusion``), and the time each stage took. The fusion is recorded
        beside the model (``esrerank_fusion.json``, for ``evaluate --fusion auto``) only when it beat the
        reranker alone on the dev split.

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
    eval_index = (train_index if same else
                  InMemoryBM25(evaluation.documents, k1=k1, b=b, analyzer=analyzer))
    retrieve_k, rerank_config = max(recipe.retrieve_k, recipe.rerank_k), RerankConfig(rerank_k=recipe.rerank_k)

    # the fusion weight, chosen on the dev split (training queries the model did not train on)
    fusion_choice = None
    if mined.dev_queries:
        dev = select_queries(train, set(mined.dev_queries))
        dev_result = evaluate(dev, train_index, reranker, retrieve_k=retrieve_k, rerank=rerank_config)
        fusion_choice = choose_fusion(dev.queries, dev.qrels, dev_result, recipe.rerank_k)
        logger.info("fusion on the dev split (%d queries): %s alpha %.2f nDCG@10 %.4f, reranker alone %.4f",
                    len(dev.queries), fusion_choice["fusion"], fusion_choice["alpha"], fusion_choice["nDCG@10"],
                    fusion_choice["reranked_alone_nDCG@10"])
        record_path = out_dir / "model" / FUSION_FILE
        if fusion_choice["beats_reranker_alone"]:  # `esrerank evaluate --fusion auto` applies it
            record = {key: value for key, value in fusion_choice.items() if key != "grid"}
            record_path.write_text(json.dumps(record, indent=2) + "\n")
        else:  # a record an earlier run of the same folder left would speak for this model
            record_path.unlink(missing_ok=True)
    else:
        logger.info("no dev split (--dev-queries 0): no fusion weight is chosen")

    heldout_collection = select_queries(evaluation, set(heldout_ids))
    result = evaluate(heldout_collection, eval_index, reranker, retrieve_k=retrieve_k, rerank=rerank_config)
    evaluation_report = {"queries": len(heldout), "measures": {}, "significance": {},
                         "fusion": (fused_heldout(heldout_collection.queries, heldout_collection.qrels, result,
                                                  recipe.rerank_k, fusion_choice) if fusion_choice else None)}
    for system, scores in result.per_query.items():
        evaluation_report["measures"][system] = {**result.measures[system],
                                                 "nDCG@10_ci95": bootstrap_ci(list(scores["nDCG@10"].values()))}
    for comparison in result.comparisons:
        evaluation_report["significance"][comparison.measure] = comparison.p_value
    reranked_alone = result.measures[RERANKED]["nDCG@10"]
    if reranked_alone <= result.measures[FIRST_STAGE]["nDCG@10"]:
        logger.warning("the reranker alone (nDCG@10 %.4f) is not better than BM25 (%.4f) on the held-out queries",
                       reranked_alone, result.measures[FIRST_STAGE]["nDCG@10"])
    report = {"mining": mined.summary, "training": asdict(training), "fusion_choice": fusion_choice,
              "evaluation": evaluation_report,
              "seconds": {"mining": mining_s, "training": train_s, "total": time.perf_counter() - started},
              "config": {"recipe": asdict(recipe), "mining": asdict(mining), "training": asdict(training_config),
                         "bm25": {"k1": k1, "b": b, "analyzer": analyzer}, "base_model": str(base_model)}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
