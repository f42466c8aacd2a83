"""The fast backend's query kernel: score postings, keep the best k, compiled with numba.

For each query it adds the BM25 contribution of each posting of the query's terms,
``idf · tf / (tf + norm(document length))`` in float64 (the norm read from a small table indexed by the
document's length or norm byte), into a dense scratch array, remembering which documents it touched,
and keeps the k best in a bounded heap ordered by (score descending, document index ascending): Lucene's
tie-break by doc id. When few documents are touched only those are examined and reset, so a query costs
time in proportion to its postings; when a quarter or more of the corpus is touched, a sequential pass
over the scratch array is cheaper than following the list. Queries are spread over threads with
``prange``; each thread owns a row of the caller's scratch arrays, which are left all zero.

Why numba and not scipy: the same work as one sparse product plus a per-row selection ran ~10× slower
(see benchmarks/bench_bm25.py), mostly in building the sparse result.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _worse(score_a, doc_a, score_b, doc_b):
    """True when (score_a, doc_a) ranks below (score_b, doc_b)."""
    return score_a < score_b or (score_a == score_b and doc_a > doc_b)


@numba.njit(cache=True)
def _sift_down(heap_scores, heap_docs, size, pos):
    # Min-heap on rank: the root is the worst of the kept documents.
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        child = left
        right = left + 1
        if right < size and _worse(heap_scores[right], heap_docs[right], heap_scores[left], heap_docs[left]):
            child = right
        if _worse(heap_scores[child], heap_docs[child], heap_scores[pos], heap_docs[pos]):
            heap_scores[pos], heap_scores[child] = heap_scores[child], heap_scores[pos]
            heap_docs[pos], heap_docs[child] = heap_docs[child], heap_docs[pos]
            pos = child
        else:
            return


@numba.njit(cache=True)
def _sift_up(heap_scores, heap_docs, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if _worse(heap_scores[pos], heap_docs[pos], heap_scores[parent], heap_docs[parent]):
            heap_scores[pos], heap_scores[parent] = heap_scores[parent], heap_scores[pos]
            heap_docs[pos], heap_docs[parent] = heap_docs[parent], heap_docs[pos]
            pos = parent
        else:
            return


@numba.njit(cache=True, inline="always")
def _offer(score, doc, k, size, heap_scores, heap_docs):
    """Keep (score, doc) if it ranks among the k best so far; returns the new heap size."""
    if size < k:
        heap_scores[size] = score
        heap_docs[size] = doc
        _sift_up(heap_scores, heap_docs, size)
        return size + 1
    if score > heap_scores[0] or (score == heap_scores[0] and doc < heap_docs[0]):
        heap_scores[0] = score
        heap_docs[0] = doc
        _sift_down(heap_scores, heap_docs, size, 0)
    return size


@numba.njit(cache=True)
def _one_query(indptr, docs, tfs, idf, norm_codes, norm_table, terms, weights, k, scratch, touched,
               heap_scores, heap_docs, out_docs, out_scores):
    n_touched = 0
    for t in range(len(terms)):
        term, weight = terms[t], weights[t]
        term_idf = idf[term]
        for p in range(indptr[term], indptr[term + 1]):
            doc = docs[p]
            freq = np.float64(tfs[p])
            contribution = term_idf * freq / (freq + norm_table[norm_codes[doc]])
            previous = scratch[doc]
            # Contributions are > 0 (idf > 0, tf > 0), so zero means untouched. Always writing and
            # conditionally advancing avoids a branch the CPU mispredicts (2x faster than an if).
            touched[n_touched] = doc
            n_touched += previous == 0.0
            scratch[doc] = previous + weight * contribution
    size = 0
    if 4 * n_touched >= len(scratch):
        for doc in range(len(scratch)):
            score = scratch[doc]
            if score != 0.0:
                scratch[doc] = 0.0
                size = _offer(score, doc, k, size, heap_scores, heap_docs)
    else:
        for i in range(n_touched):
            doc = touched[i]
            score = scratch[doc]
            scratch[doc] = 0.0
            size = _offer(score, doc, k, size, heap_scores, heap_docs)
    count = size
    while size > 0:  # pop worst first, filling the output from the back
        size -= 1
        out_scores[size] = heap_scores[0]
        out_docs[size] = heap_docs[0]
        heap_scores[0] = heap_scores[size]
        heap_docs[0] = heap_docs[size]
        _sift_down(heap_scores, heap_docs, size, 0)
    return count


@numba.njit(cache=True, parallel=True)
def top_k_batch(indptr, docs, tfs, idf, norm_codes, norm_table, query_ptr, query_terms, query_weights, k,
                scratch, touched):
    """Top ``k`` documents for each query of a batch.

    ``indptr/docs/tfs``: the postings (see ``retrieval.postings``); ``idf`` per term; ``norm_codes`` per
    document (its length, or Lucene's norm byte) indexing ``norm_table`` (k1 · (1 − b + b · dl / avgdl)).
    ``query_ptr`` delimits each query's entries in ``query_terms`` (term ids) and ``query_weights`` (how
    often the term occurs in the query). ``scratch`` (float64, all zero) and ``touched`` (int32, one
    more column than documents): one row per thread. Returns (doc indices, scores, counts) with shapes
    (B, k), (B, k), (B,).
    """
    num_queries = len(query_ptr) - 1
    num_chunks = scratch.shape[0]
    out_docs = np.full((num_queries, k), -1, dtype=np.int64)
    out_scores = np.zeros((num_queries, k), dtype=np.float64)
    counts = np.zeros(num_queries, dtype=np.int64)
    for chunk in numba.prange(num_chunks):
        heap_scores = np.empty(k, dtype=np.float64)
        heap_docs = np.empty(k, dtype=np.int64)
        for q in range(chunk, num_queries, num_chunks):
            start, end = query_ptr[q], query_ptr[q + 1]
            counts[q] = _one_query(indptr, docs, tfs, idf, norm_codes, norm_table, query_terms[start:end],
                                   query_weights[start:end], k, scratch[chunk], touched[chunk], heap_scores,
                                   heap_docs, out_docs[q], out_scores[q])
    return out_docs, out_scores, counts
