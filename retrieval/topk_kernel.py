"""The fast backend's query kernel: score postings, keep the best k, compiled with numba.

For each query it adds the BM25 contribution of each posting of the query's terms,
``idf · tf / (tf + norm(document length))`` in float64 (the norm read from a small table indexed by the
document's length or norm byte), into a dense scratch array, remembering which documents it touched,
and keeps the k best in a bounded heap ordered by (score descending, document index ascending): Lucene's
tie-break by doc id. When the query's postings cover less than a quarter of the corpus (1/32 when the
corpus is larger than 4 blocks, as scattered updates then miss the caches) only the touched documents
are examined and reset, so a query costs time in proportion to its postings; otherwise the
documents are scored in blocks of 65,536, the block's postings of every query term and then a
sequential selection pass over the block, so that the scratch array is read and written in cache
rather than in memory (at 8.8M documents it is 70 MB). Queries are spread over threads with
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


BLOCK_DOCS = 1 << 16  # 512 KB of float64 scratch: stays in a core's L2 cache while a block is scored


@numba.njit(cache=True, inline="always")
def _push(score, doc, size, heap_scores, heap_docs):
    heap_scores[size] = score
    heap_docs[size] = doc
    _sift_up(heap_scores, heap_docs, size)
    return size + 1


@numba.njit(cache=True, inline="always")
def _replace_root(score, doc, size, heap_scores, heap_docs):
    heap_scores[0] = score
    heap_docs[0] = doc
    _sift_down(heap_scores, heap_docs, size, 0)


SCAN_RUN = 64  # documents counted at once in the selection pass


@numba.njit(cache=True)
def _count_above(scratch, start, end, threshold):
    count = 0
    for doc in range(start, end):
        count += scratch[doc] > threshold
    return count


@numba.njit(cache=True)
def _one_query(indptr, docs, tfs, idf, norm_codes, norm_table, terms, weights, k, block_docs, scratch, touched,
               heap_scores, heap_docs, out_docs, out_scores):
    num_docs = len(scratch)
    postings = 0
    for t in range(len(terms)):
        postings += indptr[terms[t] + 1] - indptr[terms[t]]
    size = 0
    # Selection keeps the heap's root (the worst kept) in locals: once the heap holds k documents a
    # document costs one comparison that is almost always false, which the CPU predicts.
    root_score, root_doc = 0.0, 0
    # Scattered updates to a scratch array larger than the caches cost a memory access each (8.8M
    # documents: a query with 1/8 as many postings as documents ran 88 ms this way, 64 ms in blocks).
    sparse_limit = 4 if num_docs <= 4 * block_docs else 32
    if sparse_limit * postings >= num_docs:
        # Postings for enough of the corpus: score block by block of documents, each term's
        # postings that fall in the block, then select from the block while its scratch is in cache.
        # The sum for a document still adds its terms in query order, so scores are the same.
        cursors = np.empty(len(terms), dtype=np.int64)
        for t in range(len(terms)):
            cursors[t] = indptr[terms[t]]
        for block_start in range(0, num_docs, block_docs):
            block_end = min(block_start + block_docs, num_docs)
            for t in range(len(terms)):
                term = terms[t]
                start, end = cursors[t], indptr[term + 1]
                stop = start + np.searchsorted(docs[start:end], block_end)
                weight, term_idf = weights[t], idf[term]
                for p in range(start, stop):
                    doc = docs[p]
                    freq = np.float64(tfs[p])
                    scratch[doc] += weight * (term_idf * freq / (freq + norm_table[norm_codes[doc]]))
                cursors[t] = stop
            doc = block_start
            while doc < block_end and size < k:
                score = scratch[doc]
                if score != 0.0:
                    size = _push(score, doc, size, heap_scores, heap_docs)
                    root_score = heap_scores[0]
                doc += 1
            # Once the heap is full, few documents beat its root: a run of SCAN_RUN documents is first
            # counted for any score above the root (a loop the compiler vectorizes) and only examined one
            # by one when it has one. Strictly above: a tie loses to the kept document, whose index is
            # smaller since documents come in index order.
            while doc < block_end:
                run_end = min(doc + SCAN_RUN, block_end)
                if _count_above(scratch, doc, run_end, root_score) > 0:
                    for candidate in range(doc, run_end):
                        score = scratch[candidate]
                        if score > root_score:
                            _replace_root(score, candidate, size, heap_scores, heap_docs)
                            root_score = heap_scores[0]
                doc = run_end
            scratch[block_start:block_end] = 0.0
    else:
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
        for i in range(n_touched):
            doc = touched[i]
            score = scratch[doc]
            scratch[doc] = 0.0
            if size < k:
                size = _push(score, doc, size, heap_scores, heap_docs)
                root_score, root_doc = heap_scores[0], heap_docs[0]
            elif score > root_score or (score == root_score and doc < root_doc):
                _replace_root(score, doc, size, heap_scores, heap_docs)
                root_score, root_doc = heap_scores[0], heap_docs[0]
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
                scratch, touched, block_docs=BLOCK_DOCS):
    """Top ``k`` documents for each query of a batch.

    ``indptr/docs/tfs``: the postings (see ``retrieval.postings``); ``idf`` per term; ``norm_codes`` per
    document (its length, or Lucene's norm byte) indexing ``norm_table`` (k1 · (1 − b + b · dl / avgdl)).
    ``query_ptr`` delimits each query's entries in ``query_terms`` (term ids) and ``query_weights`` (how
    often the term occurs in the query). ``block_docs``: documents scored per block (see above).
    ``scratch`` (float64, all zero) and ``touched`` (int32, one
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
                                   query_weights[start:end], k, block_docs, scratch[chunk], touched[chunk],
                                   heap_scores, heap_docs, out_docs[q], out_scores[q])
    return out_docs, out_scores, counts
