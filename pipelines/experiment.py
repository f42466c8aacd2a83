"""One evaluation run as a library call: what ``esrerank evaluate`` does, reachable from Python with the
same defaults (as PyTerrier's ``Experiment`` is for its users)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Collection as Container
from typing import Mapping

from esrerank_errors import DataError
from retrieval.corpus import Collection
from retrieval.records import Hit

from .evaluation import FIRST_STAGE, RERANKED, Comparison, compare, mean_scores, per_query_scores
from .retrieve_rerank import EVALUATE_RETRIEVE_K, RerankConfig, Retriever, first_stage_run, rerank_run
from .runs import Run, check_doc_ids


@dataclass
class EvaluationResult:
    """measures: ``{"first_stage": {measure: mean}, "reranked": {…}}`` (``reranked`` only with a reranker).
    per_query: the same, measure → query id → value. comparisons: per measure, both means and the
    paired t-test p-value. first_stage and final: the runs, keyed by query id."""

    measures: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, dict[str, float]]]
    first_stage: Run
    final: Run
    comparisons: list[Comparison] = field(default_factory=list)


def select_queries(collection: Collection, query_ids: Container[str] | None, source: str = "query ids") -> Collection:
    """The collection restricted to ``query_ids`` (all when None); unknown ids are an error."""
    if query_ids is None:
        return collection
    unknown = set(query_ids) - {q.query_id for q in collection.queries}
    if unknown:
        raise DataError(source, f"{len(unknown)} query ids are not judged queries of the split "
                                f"(e.g. {sorted(unknown)[0]!r})")
    return replace(collection, queries=[q for q in collection.queries if q.query_id in query_ids],
                   qrels={q: judged for q, judged in collection.qrels.items() if q in query_ids})


def evaluate(collection: Collection, retriever: Retriever | None = None, reranker=None, *,
             retrieve_k: int = EVALUATE_RETRIEVE_K, rerank: RerankConfig = RerankConfig(),
             candidates: Mapping[str, list[Hit]] | None = None, candidates_source: str = "candidates",
             show_progress: bool = False) -> EvaluationResult:
    """The first stage (or the given candidates) vs reranked, on a judged collection.

    Args:
        collection: documents, judged queries and qrels (``retrieval.load_collection``).
        retriever: the first stage (``InMemoryBM25``, ``OpenSearchBM25``, …). Default None: an in-memory
            BM25 index of the collection with the defaults (k1 0.9, b 0.4, english analyzer).
        reranker: a cross-encoder (``predict(pairs)``), an ``EngineReranker``, or None (first stage only).
        retrieve_k: first-stage candidates per query. Default 1000: deep enough that Recall@1000, the
            usual first-stage measure, is reported.
        rerank: how the candidates are reranked (:class:`RerankConfig`: ``rerank_k`` 100, no fusion).
        candidates: a first-stage run to rerank instead of retrieving (e.g. official top-1000 files);
            every doc id must be in the collection.
        candidates_source: the name errors about ``candidates`` give (the run file's path).
        show_progress: a progress bar over reranked query batches. Default False.

    Returns:
        An :class:`EvaluationResult`.

    Example::

        from retrieval import load_collection
        from rerank import CrossEncoder
        from pipelines.experiment import evaluate

        result = evaluate(load_collection("../shared/data/vaswani", "test"), reranker=CrossEncoder("path/to/model"))
        print(result.measures["first_stage"]["nDCG@10"], result.measures["reranked"]["nDCG@10"])
    """
    texts = None
    if candidates is not None:
        texts = collection.texts()
        check_doc_ids(candidates, texts, candidates_source)
        first_stage = {q.query_id: list(candidates.get(q.query_id, []))[:retrieve_k] for q in collection.queries}
    else:
        if retriever is None:
            from retrieval.bm25 import InMemoryBM25

            retriever = InMemoryBM25(collection.documents, show_progress=None if show_progress else False)
        if hasattr(retriever, "missing_doc_ids"):  # an engine index: are the qrels' ids its ids?
            check_judged_ids_in_index(retriever, collection.qrels)
        first_stage = first_stage_run(retriever, collection.queries, retrieve_k)
        # the reranker reads what the first stage's index holds (an engine index: the fields its searcher
        # names), so a user's own index is reranked on its own documents
        texts = retriever.fetch_texts if hasattr(retriever, "fetch_texts") else collection.texts()
    per_query = {FIRST_STAGE: per_query_scores(first_stage, collection.qrels)}
    final, comparisons = first_stage, []
    if reranker is not None:
        final = rerank_run(collection.queries, first_stage, reranker, texts, rerank, show_progress=show_progress)
        per_query[RERANKED] = per_query_scores(final, collection.qrels)
        comparisons = compare(per_query[FIRST_STAGE], per_query[RERANKED])
    return EvaluationResult({name: mean_scores(scores) for name, scores in per_query.items()}, per_query,
                            first_stage, final, comparisons)


def check_judged_ids_in_index(retriever, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """The judged relevant documents must be in the engine's index under the ids the qrels use: none there is
    an error (the ids are another scheme: ``--id-field``); some missing is a warning with their count."""
    import logging

    judged = sorted({doc for docs in qrels.values() for doc, grade in docs.items() if grade > 0})
    if not judged:
        return
    missing = retriever.missing_doc_ids(judged)
    if len(missing) == len(judged):
        raise DataError("qrels", f"none of the {len(judged)} relevant documents the qrels name is in index "
                                 f"{retriever.index!r} (qrels ids like {', '.join(map(repr, judged[:2]))}; the "
                                 f"index's ids like {', '.join(map(repr, retriever.sample_doc_ids(2)))}); if the "
                                 "ids are in a field of the documents, name it with --id-field")
    if missing:
        logging.getLogger(__name__).warning(
            "%d of %d relevant documents the qrels name are not in index %s (e.g. %s): they count as not retrieved",
            len(missing), len(judged), retriever.index, missing[0])
