"""Retrieve-then-rerank: BM25 candidates from any first stage, rescored by a cross-encoder."""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

import numpy as np
from tqdm.auto import tqdm

from retrieval.records import Hit, Query

from .fusion import fused_run
from .runs import Run


class Retriever(Protocol):
    def search_many(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...

    def fetch_texts(self, doc_ids: Sequence[str]) -> list[str]: ...


class Reranker(Protocol):
    def predict(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


class EngineReranker:
    """Reranking done inside the engine: each query's head is searched again through a search pipeline
    that reranks it (OpenSearch's ``rerank`` processor calling ``esrerank serve``; see
    ``esrerank register opensearch``), and its scores replace the cross-encoder's in :class:`RetrieveRerank`.

    Args:
        searcher: the same index as the first stage, searched through the pipeline, e.g.
            ``OpenSearchBM25(url, index, search_pipeline="esrerank")``. The engine reranks every hit a
            search returns, so the window is the head's length.
    """

    def __init__(self, searcher):
        if not getattr(searcher, "search_pipeline", None):
            raise ValueError("EngineReranker needs a searcher with a search_pipeline")
        self.searcher = searcher

    def score_heads(self, queries: Sequence[Query], heads: Sequence[Sequence[Hit]]) -> list[np.ndarray]:
        """The engine's scores for each head's documents, in the head's order."""
        depth = max((len(head) for head in heads), default=0)
        if depth == 0:
            return [np.zeros(0) for _ in heads]
        answers = self.searcher.search_many([q.text for q in queries], depth)
        scores = []
        for query, head, answer in zip(queries, heads, answers):
            by_id = {hit.doc_id: hit.score for hit in answer}
            missing = [hit.doc_id for hit in head if hit.doc_id not in by_id]
            if missing or len(answer) != len(head):
                raise ValueError(f"query {query.query_id}: the engine's reranked window differs from the first "
                                 f"stage's top {len(head)} (e.g. {missing[:1] or 'its length'}); the first stage "
                                 "must be the same index, searched the same way")
            scores.append(np.array([by_id[hit.doc_id] for hit in head], dtype=np.float32))
        return scores

    def __repr__(self) -> str:
        return f"EngineReranker({self.searcher.url}/{self.searcher.index}, pipeline {self.searcher.search_pipeline})"


class RetrieveRerank:
    """First stage top ``retrieve_k``, of which the top ``rerank_k`` are rescored by ``reranker``.

    The reranked documents come first in reranker order; the rest of the candidates follow in first-stage
    order (so Recall@retrieve_k is the first stage's), with scores below the lowest reranked one.

    Args:
        retriever: anything with ``search_many(queries, k)``; also ``fetch_texts(doc_ids)`` unless
            ``texts`` is given.
        reranker: anything with ``predict(pairs)``, e.g. ``rerank.CrossEncoder``, or an
            :class:`EngineReranker` (the engine reranks); ``None`` returns the first stage unchanged.
        retrieve_k: candidates per query from the first stage. Default 1000.
        rerank_k: candidates per query the reranker rescores. Default 100, the usual trade-off.
        texts: doc id → text for the reranker, when the retriever cannot fetch texts itself.
        queries_per_batch: queries whose candidates go to the reranker in one call, so its batches
            are full. Default 32.
        fusion: ``None`` (default: reranker scores alone), ``"interpolate"`` (``alpha`` × min-max
            normalized reranker score + (1 − ``alpha``) × normalized first-stage score, per query) or
            ``"rrf"`` (reciprocal rank fusion, ``alpha`` weighting the reranker's ranks).
        alpha: weight of the reranker in fusion. Default 0.5.
    """

    def __init__(self, retriever: Retriever, reranker: Reranker | None, retrieve_k: int = 1000,
                 rerank_k: int = 100, texts: Mapping[str, str] | None = None, queries_per_batch: int = 32,
                 fusion: str | None = None, alpha: float = 0.5):
        if retrieve_k < 1 or rerank_k < 0:
            raise ValueError(f"need retrieve_k >= 1 and rerank_k >= 0, got {retrieve_k}, {rerank_k}")
        if fusion not in (None, "interpolate", "rrf"):
            raise ValueError(f"fusion must be None, 'interpolate' or 'rrf', got {fusion!r}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.fusion, self.alpha = fusion, alpha
        self.retriever = retriever
        self.reranker = reranker
        self.retrieve_k = retrieve_k
        self.rerank_k = min(rerank_k, retrieve_k)
        self.texts = texts
        self.queries_per_batch = queries_per_batch

    def search(self, query: str) -> list[Hit]:
        return self.search_many([query])[0]

    def search_many(self, queries: Sequence[str]) -> list[list[Hit]]:
        records = [Query(str(i), text) for i, text in enumerate(queries)]
        run = self.run(records)
        return [run[q.query_id] for q in records]

    def run(self, queries: Sequence[Query], show_progress: bool | None = None) -> Run:
        """Retrieve and rerank every query; results keyed by query id."""
        return self.rerank_run(queries, first_stage_run(self.retriever, queries, self.retrieve_k), show_progress)

    def rerank_run(self, queries: Sequence[Query], first_stage: Run, show_progress: bool | None = None) -> Run:
        """Rerank a given first-stage run (e.g. official top-1000 files); queries it lacks get no hits."""
        if self.reranker is None or self.rerank_k == 0:
            return {q.query_id: list(first_stage.get(q.query_id, []))[: self.retrieve_k] for q in queries}
        clipped = {q.query_id: list(first_stage.get(q.query_id, []))[: self.retrieve_k] for q in queries}
        return fused_run(queries, clipped, self.head_scores(queries, clipped, show_progress), self.rerank_k,
                         self.fusion, self.alpha)

    def head_scores(self, queries: Sequence[Query], first_stage: Run,
                    show_progress: bool | None = None) -> dict[str, np.ndarray]:
        """The reranker's scores of each query's first-stage top ``rerank_k``, in first-stage order:
        ``queries_per_batch`` queries' candidates per reranker call, so its batches are full."""
        if show_progress is None:
            show_progress = len(queries) > 50
        scores: dict[str, np.ndarray] = {}
        for start in tqdm(range(0, len(queries), self.queries_per_batch), desc="reranking queries",
                          unit="batch", disable=not show_progress):
            batch = queries[start:start + self.queries_per_batch]
            heads = [list(first_stage.get(q.query_id, []))[: self.rerank_k] for q in batch]
            scores.update(zip((q.query_id for q in batch), self._head_scores(batch, heads)))
        return scores

    def _head_scores(self, queries: Sequence[Query], heads: list[list[Hit]]) -> list[np.ndarray]:
        if isinstance(self.reranker, EngineReranker):
            return self.reranker.score_heads(queries, heads)
        doc_ids = [hit.doc_id for hits in heads for hit in hits]
        texts = self._texts(doc_ids)
        pairs, offset = [], 0
        for q, hits in zip(queries, heads):
            pairs.extend((q.text, texts[offset + i]) for i in range(len(hits)))
            offset += len(hits)
        scores = self.reranker.predict(pairs) if pairs else np.zeros(0)
        split_at = np.cumsum([len(hits) for hits in heads])[:-1]
        return np.split(np.asarray(scores), split_at)

    def _texts(self, doc_ids: list[str]) -> list[str]:
        if self.texts is not None:
            missing = [d for d in doc_ids if d not in self.texts]
            if missing:
                raise KeyError(f"{len(missing)} candidate doc ids have no text (e.g. {missing[0]!r})")
            return [self.texts[d] for d in doc_ids]
        return self.retriever.fetch_texts(doc_ids)


def first_stage_run(retriever: Retriever, queries: Sequence[Query], k: int) -> Run:
    """The retriever's top ``k`` for each query, keyed by query id."""
    return dict(zip((q.query_id for q in queries), retriever.search_many([q.text for q in queries], k)))
