"""Reranking a first-stage run, and retrieve-then-rerank.

:func:`rerank_run` is the one way esrerank reranks: a first-stage run in, a reranked run out (optionally
fused with the first stage's scores). Evaluation, the recipe, the batch job, the benchmarks and the
engine-side route (:class:`EngineReranker`) all go through it; :class:`RetrieveRerank` is a first stage
plus it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence, Union, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from esrerank_errors import DataError, EngineError, InputError
from retrieval.records import Hit, Query

from .fusion import FUSIONS, fused_run
from .runs import Run


class Retriever(Protocol):
    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...

    def fetch_texts(self, doc_ids: Sequence[str]) -> list[str]: ...


class Reranker(Protocol):
    """A cross-encoder: scores (query, document text) pairs, e.g. ``rerank.CrossEncoder``."""

    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


@runtime_checkable
class HeadReranker(Protocol):
    """A reranker that reads the documents itself, given each query's head of hits: :class:`EngineReranker`."""

    def score_heads(self, queries: Sequence[Query], heads: Sequence[Sequence[Hit]]) -> list[np.ndarray]: ...


# doc id → text, or a function fetching the texts of doc ids (a retriever's ``fetch_texts``)
Texts = Union[Mapping[str, str], Callable[[Sequence[str]], list[str]]]

# First-stage candidates per query in an evaluation (``esrerank evaluate``): deep enough that the first stage's
# Recall@1000 is measured; reranking reads only the first ``rerank_k`` of them.
EVALUATE_RETRIEVE_K = 1000


@dataclass(frozen=True)
class RerankConfig:
    """How a first-stage run is reranked; the defaults of every command and function that reranks.

    rerank_k: candidates per query the reranker rescores; the rest follow in first-stage order. Default 100,
        the usual trade-off between effectiveness and cost (and what ``esrerank train``'s dev split reranks).
    fusion: ``None`` (default: the reranker's scores alone), ``"interpolate"`` (``alpha`` × min-max normalized
        reranker score + (1 − ``alpha``) × normalized first-stage score, per query) or ``"rrf"``
        (reciprocal rank fusion, ``alpha`` weighting the reranker's ranks).
    alpha: the reranker's weight in fusion. Default 0.5, equal weights.
    queries_per_batch: queries whose candidates go to the reranker in one call, so its length-sorted
        batches are full. Default 32.
    """

    rerank_k: int = 100
    fusion: str | None = None
    alpha: float = 0.5
    queries_per_batch: int = 32

    def __post_init__(self):
        if self.rerank_k < 0:
            raise InputError(f"rerank_k must be 0 or more, got {self.rerank_k}")
        if self.fusion not in (None, *FUSIONS):
            raise InputError(f"fusion must be None, {' or '.join(map(repr, FUSIONS))}, got {self.fusion!r}")
        if not 0 <= self.alpha <= 1:
            raise InputError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.queries_per_batch < 1:
            raise InputError(f"queries_per_batch must be 1 or more, got {self.queries_per_batch}")


class EngineReranker:
    """Reranking done inside the engine, which calls ``esrerank serve`` itself: each query's head is searched
    again, restricted to the head's documents, through the engine's reranking, and the engine's scores replace
    the cross-encoder's in :func:`rerank_run`.

    Args:
        searcher: the same index as the first stage, searched through the engine's reranking:
            ``ElasticsearchBM25(url, index, rescore="esrerank")`` (esrerank's rescorer plugin) or
            ``OpenSearchBM25(url, index, search_pipeline="esrerank")`` (OpenSearch's ``rerank`` processor, see
            ``esrerank register opensearch``). The window is the head's length.
    """

    def __init__(self, searcher):
        if not getattr(searcher, "search_pipeline", None) and not getattr(searcher, "rescore", None):
            raise InputError("reranking inside the engine needs a searcher with a search pipeline (OpenSearch) or "
                             "a rescorer (Elasticsearch)")
        self.searcher = searcher

    def score_heads(self, queries: Sequence[Query], heads: Sequence[Sequence[Hit]]) -> list[np.ndarray]:
        """The engine's scores for each head's documents, in the head's order."""
        depth = max((len(head) for head in heads), default=0)
        if depth == 0:
            return [np.zeros(0) for _ in heads]
        texts = [q.text for q in queries]
        if getattr(self.searcher, "rescore", None):
            # a rescorer's window is per shard: restricted to the head, the shards' windows are the head
            answers = self.searcher.search_many(texts, depth, restrict_to=[[hit.doc_id for hit in head]
                                                                         for head in heads])
        else:
            answers = self.searcher.search_many(texts, depth)
        scores = []
        for query, head, answer in zip(queries, heads, answers):
            by_id = {hit.doc_id: hit.score for hit in answer}
            missing = [hit.doc_id for hit in head if hit.doc_id not in by_id]
            if missing or len(answer) != len(head):
                raise EngineError(200, f"query {query.query_id}: the engine's reranked window differs from the "
                                       f"first stage's top {len(head)} (e.g. {missing[:1] or 'its length'}); the "
                                       "first stage must be the same index, searched the same way")
            scores.append(np.array([by_id[hit.doc_id] for hit in head], dtype=np.float32))
        return scores

    def __repr__(self) -> str:
        how = (f"rescorer {self.searcher.rescore}" if getattr(self.searcher, "rescore", None)
               else f"pipeline {self.searcher.search_pipeline}")
        return f"EngineReranker({self.searcher.url}/{self.searcher.index}, {how})"


def head_scores(queries: Sequence[Query], first_stage: Run, reranker: Reranker | HeadReranker, texts: Texts,
                rerank_k: int = RerankConfig.rerank_k, queries_per_batch: int = RerankConfig.queries_per_batch,
                show_progress: bool | None = None) -> dict[str, np.ndarray]:
    """The reranker's scores of each query's first-stage top ``rerank_k``, in first-stage order, keyed by
    query id: ``queries_per_batch`` queries' candidates per reranker call, so its batches are full."""
    if show_progress is None:
        show_progress = len(queries) > 50
    scores: dict[str, np.ndarray] = {}
    for start in tqdm(range(0, len(queries), queries_per_batch), desc="reranking queries", unit="batch",
                      disable=not show_progress):
        batch = queries[start:start + queries_per_batch]
        heads = [list(first_stage.get(q.query_id, []))[:rerank_k] for q in batch]
        if isinstance(reranker, HeadReranker):  # it reads the documents itself (an engine)
            batch_scores = reranker.score_heads(batch, heads)
        else:
            batch_scores = _pair_scores(batch, heads, reranker, texts)
        scores.update(zip((q.query_id for q in batch), batch_scores))
    return scores


def _pair_scores(queries: Sequence[Query], heads: list[list[Hit]], reranker: Reranker, texts: Texts):
    doc_ids = [hit.doc_id for hits in heads for hit in hits]
    doc_texts = _texts_of(doc_ids, texts)
    pairs, offset = [], 0
    for q, hits in zip(queries, heads):
        pairs.extend((q.text, doc_texts[offset + i]) for i in range(len(hits)))
        offset += len(hits)
    scores = reranker.predict(pairs) if pairs else np.zeros(0)
    split_at = np.cumsum([len(hits) for hits in heads])[:-1]
    return np.split(np.asarray(scores), split_at)


def _texts_of(doc_ids: list[str], texts: Texts) -> list[str]:
    if callable(texts):
        return texts(doc_ids)
    missing = [d for d in doc_ids if d not in texts]
    if missing:
        raise DataError("candidates", f"{len(missing)} candidate doc ids have no text in the collection "
                                      f"(e.g. {missing[0]!r})")
    return [texts[d] for d in doc_ids]


def rerank_run(queries: Sequence[Query], first_stage: Run, reranker: Reranker | HeadReranker | None,
               texts: Texts, config: RerankConfig = RerankConfig(), show_progress: bool | None = None) -> Run:
    """Rerank a first-stage run: each query's top ``config.rerank_k`` in the reranker's order (its scores,
    or fused with the first stage's), followed by the rest in first-stage order with scores below the
    lowest reranked one (so Recall at the run's depth is the first stage's). Results keyed by query id;
    a query the run lacks gets no hits.

    Args:
        queries: the queries, with their text.
        first_stage: query id → hits, e.g. ``first_stage_run(retriever, queries, 1000)`` or
            ``read_trec_run(path)``.
        reranker: a cross-encoder (``predict(pairs)``), an :class:`EngineReranker`, or None (the first stage
            unchanged).
        texts: doc id → text the reranker reads, or a function fetching them (a retriever's ``fetch_texts``).
        config: :class:`RerankConfig`.
        show_progress: a progress bar over query batches. Default None: when there are over 50 queries.
    """
    if reranker is None or config.rerank_k == 0:
        return {q.query_id: list(first_stage.get(q.query_id, [])) for q in queries}
    scores = head_scores(queries, first_stage, reranker, texts, config.rerank_k, config.queries_per_batch,
                         show_progress)
    return fused_run(queries, first_stage, scores, config.rerank_k, config.fusion, config.alpha)


def first_stage_run(retriever: Retriever, queries: Sequence[Query], k: int) -> Run:
    """The retriever's top ``k`` for each query, keyed by query id."""
    return dict(zip((q.query_id for q in queries), retriever.search_many([q.text for q in queries], k)))


class RetrieveRerank:
    """A first stage's top ``retrieve_k``, reranked by :func:`rerank_run`.

    Args:
        retriever: anything with ``search_many(queries, k)``; also ``fetch_texts(doc_ids)`` unless ``texts``
            is given.
        reranker: a cross-encoder (``predict(pairs)``), an :class:`EngineReranker`, or None (the first stage).
        retrieve_k: candidates per query from the first stage. Default 1000.
        texts: doc id → text for the reranker, when the retriever cannot fetch texts itself.
        rerank_k, fusion, alpha, queries_per_batch: as :class:`RerankConfig` (defaults 100, None, 0.5, 32).
    """

    def __init__(self, retriever: Retriever, reranker: Reranker | HeadReranker | None, retrieve_k: int = 1000,
                 rerank_k: int = RerankConfig.rerank_k, texts: Mapping[str, str] | None = None,
                 queries_per_batch: int = RerankConfig.queries_per_batch, fusion: str | None = RerankConfig.fusion,
                 alpha: float = RerankConfig.alpha):
        if retrieve_k < 1:
            raise InputError(f"retrieve_k must be 1 or more, got {retrieve_k}")
        self.config = RerankConfig(min(rerank_k, retrieve_k), fusion, alpha, queries_per_batch)
        self.retriever = retriever
        self.reranker = reranker
        self.retrieve_k = retrieve_k
        self.texts = texts

    def search(self, query: str) -> list[Hit]:
        return self.search_many([query])[0]

    def search_many(self, queries: Sequence[str]) -> list[list[Hit]]:
        records = [Query(str(i), text) for i, text in enumerate(queries)]
        run = self.run(records)
        return [run[q.query_id] for q in records]

    def run(self, queries: Sequence[Query], show_progress: bool | None = None) -> Run:
        """Retrieve and rerank every query; results keyed by query id."""
        first_stage = first_stage_run(self.retriever, queries, self.retrieve_k)
        texts = self.texts if self.texts is not None else self.retriever.fetch_texts
        return rerank_run(queries, first_stage, self.reranker, texts, self.config, show_progress)
