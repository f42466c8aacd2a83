"""Compact postings built from a stream of analyzed documents, never holding the corpus in memory.

Layout (term-major, like a CSR matrix without values): ``indptr`` (int64, one entry per term + 1),
``docs`` (int32 document positions, ascending within a term), ``tfs`` (term frequencies, the smallest of
uint8/uint16/uint32 that holds them). 5 bytes a posting for most corpora, against 12-16 for a float
score matrix. Scores are computed from these at query time (see ``topk_kernel``), in float64, so
they are exactly the textbook formula's.

The build takes documents in batches: each batch's (term, tf) pairs, in document order, are spilled to
a scratch folder and the document frequencies counted; ``finish`` allocates the final arrays once and
scatters the spilled batches into them, so the peak is the final postings plus one batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numba
import numpy as np


def smallest_uint_dtype(largest: int):
    """The narrowest unsigned integer type that holds ``largest``."""
    return np.uint8 if largest < 2**8 else np.uint16 if largest < 2**16 else np.uint32


@numba.njit(cache=True)
def _count_document_terms(term_ids, lengths, last_doc, slot, out_terms, out_tfs, out_unique):
    """Distinct terms of each document with their frequencies, in document order. ``last_doc`` (one
    entry per term, all -1 at the start) tells whether a term was seen in this document, and ``slot``
    where its entry is."""
    n = 0
    p = 0
    for d in range(len(lengths)):
        first = n
        for i in range(p, p + lengths[d]):
            term = term_ids[i]
            if last_doc[term] != d:
                last_doc[term] = d
                slot[term] = n
                out_terms[n] = term
                out_tfs[n] = 1
                n += 1
            else:
                out_tfs[slot[term]] += 1
        out_unique[d] = n - first
        p += lengths[d]
    return n


@numba.njit(cache=True)
def _scatter(terms, tfs, docs, next_slot, out_docs, out_tfs):
    for i in range(len(terms)):
        term = terms[i]
        slot = next_slot[term]
        out_docs[slot] = docs[i]
        out_tfs[slot] = tfs[i]
        next_slot[term] = slot + 1


class PostingsBuilder:
    """Collects batches of analyzed documents (``add``) and returns the postings (``finish``).

    Args:
        scratch: folder for the spilled batches (created if missing; the files are removed by ``finish``).
    """

    def __init__(self, scratch: str | os.PathLike):
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._batches: list[tuple[Path, int, int]] = []  # (file, first document, documents)
        self._doc_freq = np.zeros(0, dtype=np.int64)
        self._last_doc = np.zeros(0, dtype=np.int64)
        self._slot = np.zeros(0, dtype=np.int64)
        self._lengths: list[np.ndarray] = []
        self.num_docs = 0
        self.max_tf = 0

    def add(self, term_ids: np.ndarray, lengths: np.ndarray, vocabulary_size: int) -> None:
        """One batch of consecutive documents: all their term ids in order, and each one's length."""
        if vocabulary_size > len(self._last_doc):
            grown = max(vocabulary_size, 2 * len(self._last_doc))
            self._last_doc = np.concatenate([self._last_doc, np.full(grown - len(self._last_doc), -1, np.int64)])
            self._doc_freq = np.concatenate([self._doc_freq, np.zeros(grown - len(self._doc_freq), np.int64)])
            self._slot = np.zeros(grown, dtype=np.int64)
        self._last_doc[:] = -1
        terms = np.empty(len(term_ids), dtype=np.int32)
        tfs = np.empty(len(term_ids), dtype=np.uint32)
        unique = np.empty(len(lengths), dtype=np.int32)
        n = _count_document_terms(term_ids, lengths.astype(np.int64), self._last_doc, self._slot, terms, tfs, unique)
        terms, tfs = terms[:n], tfs[:n]
        self._doc_freq += np.bincount(terms, minlength=len(self._doc_freq))
        self.max_tf = max(self.max_tf, int(tfs.max()) if n else 0)
        path = self.scratch / f"batch-{len(self._batches):06d}.npz"
        np.savez(path, terms=terms, tfs=tfs.astype(smallest_uint_dtype(int(tfs.max()) if n else 0)), unique=unique)
        self._batches.append((path, self.num_docs, len(lengths)))
        self._lengths.append(np.asarray(lengths, dtype=np.int64))
        self.num_docs += len(lengths)

    def finish(self, vocabulary_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, docs, tfs, document lengths), tfs and lengths in their narrowest unsigned type; removes
        the spilled batches."""
        doc_freq = self._doc_freq[:vocabulary_size]
        indptr = np.zeros(vocabulary_size + 1, dtype=np.int64)
        np.cumsum(doc_freq, out=indptr[1:])
        tf_dtype = smallest_uint_dtype(self.max_tf)
        doc_dtype = np.int32 if self.num_docs < 2**31 else np.int64
        docs = np.empty(int(indptr[-1]), dtype=doc_dtype)
        tfs = np.empty(int(indptr[-1]), dtype=tf_dtype)
        next_slot = indptr[:-1].copy()
        for path, first, count in self._batches:
            with np.load(path) as batch:
                unique = batch["unique"]
                batch_docs = np.repeat(np.arange(first, first + count, dtype=doc_dtype), unique)
                _scatter(batch["terms"], batch["tfs"], batch_docs, next_slot, docs, tfs)
            path.unlink()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        self._batches, self._lengths = [], []
        return indptr, docs, tfs, lengths.astype(smallest_uint_dtype(int(lengths.max()) if len(lengths) else 0))
