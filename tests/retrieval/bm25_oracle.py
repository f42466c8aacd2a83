"""An independent BM25 for the tests: the ``rank-bm25`` package's corpus statistics with Lucene's formula.

``retrieval.bm25.InMemoryBM25`` computes the same scores from compact postings with a compiled kernel;
this shares none of that code (only the analyzer and Lucene's idf and one-byte lengths), so the two
agreeing checks the fast path. Slow: it holds every analyzed document and scores every document for every
query, so it is for the small test collections only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from rank_bm25 import BM25

from retrieval.analysis import get_analyzer
from retrieval.bm25 import LENGTH_NORMS, lucene_decoded_length, lucene_encoded_length, lucene_idf
from retrieval.records import Document, Hit


def lucene_lengths(lengths: np.ndarray) -> np.ndarray:
    """Document lengths as Lucene's BM25 sees them (quantized through the norm byte)."""
    table = {n: lucene_decoded_length(lucene_encoded_length(int(n))) for n in np.unique(lengths)}
    return np.array([table[n] for n in lengths], dtype=np.float64)


class RankBM25Oracle:
    """``search`` and ``search_many`` as ``InMemoryBM25`` answers them (ties broken by corpus order), for
    ``documents`` analyzed by ``analyzer``, with ``k1``, ``b`` and ``length_norm`` as there."""

    def __init__(self, documents: Sequence[Document], k1: float = 0.9, b: float = 0.4, analyzer: str = "english",
                 length_norm: str = "exact"):
        assert length_norm in LENGTH_NORMS, length_norm
        self.analyzer = get_analyzer(analyzer)
        self.doc_ids = [d.doc_id for d in documents]
        self._scorer = _LuceneRankBM25([self.analyzer(d.contents) for d in documents], k1, b, length_norm)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        scores = self._scorer.get_scores(self.analyzer(query))
        matched = np.flatnonzero(scores > 0)
        return self._rank(matched, scores[matched], k)

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        return [self.search(query, k) for query in queries]

    def _rank(self, doc_indices: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
        if len(scores) > k:
            kth_best = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= kth_best  # every tie at the boundary, so the tie-break below decides
            doc_indices, scores = doc_indices[keep], scores[keep]
        order = np.lexsort((doc_indices, -scores))[:k]
        return [Hit(self.doc_ids[doc_indices[i]], float(scores[i]), rank) for rank, i in enumerate(order, start=1)]


class _LuceneRankBM25:
    """rank-bm25's corpus statistics (document frequencies, lengths) with Lucene's BM25 formula."""

    def __init__(self, analyzed: list[list[str]], k1: float, b: float, length_norm: str):
        class LuceneBM25(BM25):
            def __init__(self, corpus):
                self.k1, self.b = k1, b
                super().__init__(corpus)

            def _calc_idf(self, nd):
                self.idf = {term: float(lucene_idf(n, self.corpus_size)) for term, n in nd.items()}

            def get_scores(self, query):
                scores = np.zeros(self.corpus_size)
                dl = np.array(self.doc_len, dtype=np.float64)
                if length_norm == "lucene":
                    dl = lucene_lengths(np.array(self.doc_len))
                norm = self.k1 * (1 - self.b + self.b * dl / self.avgdl)
                for term in query:
                    tf = np.array([doc.get(term, 0) for doc in self.doc_freqs], dtype=np.float64)
                    scores += self.idf.get(term, 0.0) * tf / (tf + norm)
                return scores

        empty = sum(1 for doc in analyzed if not doc)
        if empty:
            # rank-bm25 counts every document in N and avgdl; Lucene only those with terms. Keep the
            # empty ones out of its statistics and map positions back.
            self._positions = np.array([i for i, doc in enumerate(analyzed) if doc])
            analyzed = [doc for doc in analyzed if doc]
        else:
            self._positions = None
        self._size = len(analyzed) + empty
        self._model = LuceneBM25(analyzed)

    def get_scores(self, query_terms: list[str]) -> np.ndarray:
        scores = self._model.get_scores(query_terms)
        if self._positions is None:
            return scores
        full = np.zeros(self._size)
        full[self._positions] = scores
        return full
