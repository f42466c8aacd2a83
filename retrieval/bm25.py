"""In-memory BM25 with Lucene's formula, for tests, small corpora and the embedded default.

Lucene (and so Elasticsearch, OpenSearch, Anserini) scores a term as

    idf(t) · tf / (tf + k1 · (1 − b + b · dl / avgdl)),   idf(t) = ln(1 + (N − n + 0.5) / (n + 0.5))

with no (k1 + 1) factor, where dl is the number of terms the analyzer produced for the document and
avgdl the mean over documents. A query's score is the sum over its terms (a repeated query term counts
again, as in a ``match`` query). Ties are broken by corpus order, as Lucene breaks them by doc id.

The index is compact postings (document positions and term frequencies, ``retrieval.postings``) built by
streaming the corpus once; a compiled kernel (numba) scores the postings of a batch of queries in float64
and keeps each query's k best, on all cores. (The tests check it against an independent implementation on
the ``rank-bm25`` package's statistics, ``tests/retrieval/bm25_oracle.py``.)

``length_norm="lucene"`` stores document lengths the way Lucene does (one byte per document, exact
below 24 terms and 4 significant bits above) so that scores match a real engine's; ``"exact"`` (the
default) keeps exact lengths, the textbook formula.
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
from contextlib import contextmanager
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numba
import numpy as np
from tqdm.auto import tqdm

from esrerank_errors import DataError, InputError

from .analysis import get_analyzer
from .encoding_pool import EncodingPool
from .postings import PostingsBuilder
from .records import Document, Hit
from .string_store import StringStore, StringStoreWriter
from .topk_kernel import BLOCK_DOCS, top_k_batch

FORMAT_VERSION = 2  # 1: a scipy score matrix and JSON ids/texts (before the compact postings)
LENGTH_NORMS = ("exact", "lucene")


# --- Lucene's one-byte document length (SmallFloat.intToByte4 / byte4ToInt) ---------------------------

def _long_to_int4(value: int) -> int:
    bits = value.bit_length()
    if bits < 4:
        return value
    shift = bits - 4
    return ((value >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(encoded: int) -> int:
    mantissa, shift = encoded & 0x07, (encoded >> 3) - 1
    return mantissa if shift == -1 else (mantissa | 0x08) << shift


_FREE_VALUES = 255 - _long_to_int4(2**31 - 1)  # lengths below this (24) are stored exactly


def lucene_encoded_length(length: int) -> int:
    """The norm byte Lucene stores for a field of ``length`` terms."""
    return length if length < _FREE_VALUES else _FREE_VALUES + _long_to_int4(length - _FREE_VALUES)


def lucene_decoded_length(norm_byte: int) -> int:
    """The length Lucene's BM25 reads back from a norm byte."""
    if norm_byte < _FREE_VALUES:
        return norm_byte
    return min(_FREE_VALUES + _int4_to_long(norm_byte - _FREE_VALUES), 2**31 - 1)


def _lucene_norm_bytes(lengths: np.ndarray) -> np.ndarray:
    """Lucene's norm byte of each document length, as uint8."""
    unique, inverse = np.unique(lengths, return_inverse=True)
    return np.array([lucene_encoded_length(int(n)) for n in unique], dtype=np.uint8)[inverse]


def lucene_idf(doc_freq: np.ndarray | float, doc_count: int) -> np.ndarray | float:
    return np.log1p((doc_count - doc_freq + 0.5) / (doc_freq + 0.5))


class InMemoryBM25:
    """BM25 over an in-memory corpus, scored with Lucene's formula.

    The corpus is streamed once, ``batch_docs`` documents at a time: it can be a generator over a file
    far larger than memory: ``InMemoryBM25(iter_msmarco_collection("collection.tsv"))`` built an
    8.8M-passage MS MARCO-shaped corpus with a peak of 3 GB. What stays in memory is compact: postings of
    int32 document positions and uint8 term frequencies (``retrieval.postings``), one length per
    document, term ids instead of strings; texts and ids go to a buffer file in ``scratch_dir`` that is
    memory-mapped (see ``retrieval.string_store``).

    Args:
        corpus: iterable of ``{"_id", "title", "text"}`` mappings or :class:`Document` records; title and
            text are indexed together as one field. Read once, in order.
        k1: term-frequency saturation. Default 0.9, as Anserini uses for MS MARCO.
        b: length normalization. Default 0.4, as Anserini uses for MS MARCO.
        analyzer: ``"english"`` (default, Elasticsearch's english analyzer) or ``"standard"``.
        length_norm: ``"exact"`` (default) or ``"lucene"`` (lengths quantized as a real engine stores them).
        show_progress: progress bar while indexing; ``None`` (default) shows it when indexing takes more
            than two seconds.
        batch_docs: documents analyzed per batch (default 50,000): larger batches amortize per-batch work,
            smaller ones lower the peak memory of the build.
        scratch_dir: where the text/id buffers and the build's spilled batches go (default: the system's
            temporary folder); removed with the index unless it was saved there.
        workers: processes that analyze the text (default 1: this one). Analysis is most of a build's
            time; on a machine with cores to spare, ``os.cpu_count()`` shortens a large build (the
            workers start in ~1 s, so it does not pay for small corpora).
    """

    def __init__(self, corpus: Iterable, k1: float = 0.9, b: float = 0.4, analyzer: str = "english",
                 length_norm: str = "exact", show_progress: bool | None = None, batch_docs: int = 50_000,
                 scratch_dir: str | os.PathLike | None = None, workers: int = 1):
        if length_norm not in LENGTH_NORMS:
            raise InputError(f"unknown length_norm {length_norm!r}; choose one of {LENGTH_NORMS}")
        if k1 < 0 or not 0 <= b <= 1:
            raise InputError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if isinstance(corpus, (str, bytes, os.PathLike)):
            raise TypeError("corpus must be an iterable of documents, not a path; read the file with "
                            "retrieval.corpus.open_corpus(path).documents")
        self.k1, self.b = float(k1), float(b)
        self.analyzer = get_analyzer(analyzer)
        self.length_norm = length_norm
        self._lock = threading.Lock()
        self._scratch_folder = tempfile.TemporaryDirectory(prefix="esrerank-bm25-", dir=scratch_dir)
        folder = Path(self._scratch_folder.name)

        postings = PostingsBuilder(folder / "spill")
        ids_writer, texts_writer = StringStoreWriter(folder / "doc_ids.bin"), StringStoreWriter(folder / "texts.bin")
        rows = iter(corpus)
        counted = 0

        def text_batches() -> Iterator[list[str]]:
            """The corpus in batches of texts; their ids and texts are stored as they go by."""
            nonlocal counted
            while batch := list(islice(rows, batch_docs)):
                documents = [_as_document(row, counted + i) for i, row in enumerate(batch)]
                contents = [d.contents for d in documents]
                ids_writer.add([d.doc_id for d in documents])
                texts_writer.add(contents)
                counted += len(batch)
                yield contents

        with EncodingPool(self.analyzer.name, workers) as pool, \
                tqdm(desc="indexing", unit="doc", delay=2, disable=show_progress is False,
                     total=len(corpus) if hasattr(corpus, "__len__") else None) as progress:
            for term_ids, lengths in pool.encode_batches(text_batches()):
                postings.add(term_ids, lengths, len(pool.vocabulary))
                progress.update(len(lengths))
            pool.close()
        if counted == 0:
            raise InputError("cannot index an empty corpus")
        self.doc_ids = ids_writer.finish()
        self._texts = texts_writer.finish()
        duplicates = self.doc_ids.duplicates()
        if duplicates:
            listed = ", ".join(f"{doc_id!r} (documents {a} and {b})" for doc_id, a, b in duplicates)
            raise InputError(f"corpus has duplicate doc ids: {listed}")
        self.vocabulary = pool.vocabulary
        self._set_postings(*postings.finish(len(self.vocabulary)))

    def _set_postings(self, indptr: np.ndarray, docs: np.ndarray, tfs: np.ndarray, doc_lengths: np.ndarray) -> None:
        """Install the postings and derive what scoring needs: idf per term, a norm table and codes."""
        self.indptr, self.docs, self.tfs, self.doc_lengths = indptr, docs, tfs, doc_lengths
        doc_count = int(np.count_nonzero(doc_lengths))  # Lucene counts documents that have the field
        avgdl = float(doc_lengths.sum(dtype=np.int64)) / max(doc_count, 1)
        self.idf = lucene_idf(np.diff(indptr).astype(np.float64), doc_count)
        if self.length_norm == "lucene":
            table = np.array([lucene_decoded_length(byte) for byte in range(256)], dtype=np.float64)
            self._norm_codes = _lucene_norm_bytes(doc_lengths)
        else:
            table = np.arange(int(doc_lengths.max()) + 1, dtype=np.float64)
            self._norm_codes = doc_lengths
        self._norm_table = self.k1 * (1 - self.b + self.b * table / avgdl)
        self._block_docs = BLOCK_DOCS
        self._scratch = np.zeros((0, len(doc_lengths)), dtype=np.float64)
        self._touched = np.zeros((0, len(doc_lengths) + 1), dtype=np.int32)

    @property
    def _doc_id_array(self) -> np.ndarray | None:
        """All doc ids as one object array, for fast hit building; only for corpora up to 2M documents
        (a Python string per document is what the compact store avoids)."""
        if getattr(self, "_doc_id_objects", None) is None and len(self.doc_ids) <= 2_000_000:
            self._doc_id_objects = np.array(list(self.doc_ids), dtype=object)
        return getattr(self, "_doc_id_objects", None)

    # --- searching -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.doc_ids)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The top ``k`` documents for ``query``, best first, ranks from 1."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: Sequence[str], k: int = 10, batch_size: int = 1024,
                    show_progress: bool | None = None) -> list[list[Hit]]:
        """Top ``k`` for each query, in input order, ``batch_size`` queries per kernel call."""
        self._check_queries(queries, k)
        if show_progress is None:
            show_progress = len(queries) > 5_000
        results: list[list[Hit]] = []
        for start in tqdm(range(0, len(queries), batch_size), desc="searching", unit="batch",
                          disable=not show_progress):
            results.extend(self._hits(self._search_batch(queries[start:start + batch_size], k)))
        return results

    def search_many_arrays(self, queries: Sequence[str], k: int = 10) -> TopKArrays:
        """Top ``k`` for each query as arrays, as bm25s returns them: for bulk work (run files, mining) where
        a record per hit is not needed. Same results as ``search_many``; see ``TopKArrays``."""
        self._check_queries(queries, k)
        return self._search_batch(queries, k)

    @staticmethod
    def _check_queries(queries, k) -> None:
        if isinstance(queries, str):
            raise TypeError("expected a list of query strings; use search() for one query")
        if not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        for i, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise InputError(f"query {i} is empty or not a string: {query!r}")

    def _search_batch(self, queries: Sequence[str], k: int) -> TopKArrays:
        query_ptr, query_terms, query_weights = [0], [], []
        for query in queries:
            counts: dict[int, int] = {}
            for term in self.analyzer(query):
                term_id = self.vocabulary.get(term)
                if term_id is not None:
                    counts[term_id] = counts.get(term_id, 0) + 1
            query_terms.extend(counts)
            query_weights.extend(counts.values())
            query_ptr.append(len(query_terms))
        threads = max(1, min(numba.get_num_threads(), len(queries)))
        with self._lock:  # the scratch rows are shared by calls; the kernel leaves them zero
            if self._scratch.shape[0] < threads:
                self._scratch = np.zeros((threads, len(self.doc_ids)), dtype=np.float64)
                self._touched = np.zeros((threads, len(self.doc_ids) + 1), dtype=np.int32)
            docs, scores, counts = top_k_batch(
                self.indptr, self.docs, self.tfs, self.idf, self._norm_codes, self._norm_table,
                np.array(query_ptr, dtype=np.int64), np.array(query_terms, dtype=np.int64),
                np.array(query_weights, dtype=np.float64), min(k, len(self.doc_ids)),
                self._scratch[:threads], self._touched[:threads], self._block_docs)
        if k > len(self.doc_ids):  # keep the promised (n, k) shape
            docs = np.pad(docs, ((0, 0), (0, k - docs.shape[1])), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, k - scores.shape[1])))
        return TopKArrays(docs, scores, counts)

    def _hits(self, top: TopKArrays) -> list[list[Hit]]:
        all_ids = self._doc_id_array
        if all_ids is not None:
            ids = all_ids[top.doc_indices].tolist()
        else:
            width = top.doc_indices.shape[1]
            flat = self.doc_ids.take(np.maximum(top.doc_indices, 0))
            ids = [flat[q * width:(q + 1) * width] for q in range(len(top.doc_indices))]
        scores = top.scores.tolist()
        ranks = range(1, top.scores.shape[1] + 1)
        with _collector_paused():
            return [list(map(_make_hit, zip(ids[q][:n], scores[q][:n], ranks)))
                    for q, n in enumerate(top.counts.tolist())]

    def fetch_texts(self, doc_ids: Sequence[str]) -> list[str]:
        """The indexed text (title and text joined) of each doc id, for the reranker."""
        positions = self.doc_ids.positions(doc_ids)
        if (positions < 0).any():
            missing = doc_ids[int(np.flatnonzero(positions < 0)[0])]
            raise InputError(f"doc id {missing!r} is not in this index")
        return self._texts.take(positions)

    # --- saving --------------------------------------------------------------------------------

    def params(self) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        try:
            library_version = version("esrerank")
        except PackageNotFoundError:
            library_version = "unknown"
        return {"k1": self.k1, "b": self.b, "analyzer": self.analyzer.name, "length_norm": self.length_norm,
                "num_docs": len(self.doc_ids), "format_version": FORMAT_VERSION,
                "library": "esrerank", "library_version": library_version}

    def save(self, folder) -> None:
        """Save to ``folder``: ``params.json`` (k1, b, analyzer, versions), the postings as ``.npy`` arrays,
        the vocabulary, and the id and text buffers. ``load`` memory-maps them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("indptr", "docs", "tfs", "doc_lengths"):
            np.save(folder / f"{name}.npy", getattr(self, name))
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        (folder / "vocabulary.json").write_text(json.dumps(terms), encoding="utf-8")
        self.doc_ids.copy_to(folder / "doc_ids.bin")
        self._texts.copy_to(folder / "texts.bin")
        (folder / "params.json").write_text(json.dumps(self.params(), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder) -> "InMemoryBM25":
        """Open a saved index. The arrays and buffers are memory-mapped: loading reads the vocabulary and
        little else, and pages are read from disk as queries touch them."""
        folder = Path(folder)
        params_path = folder / "params.json"
        if not params_path.is_file():
            raise DataError(params_path, f"not found; is {folder} a saved InMemoryBM25 index?")
        params = json.loads(params_path.read_text(encoding="utf-8"))
        if params.get("format_version") != FORMAT_VERSION:
            raise DataError(params_path, f"index format {params.get('format_version')} is not {FORMAT_VERSION}; "
                                         "build the index again with this version")
        index = cls.__new__(cls)
        index.k1, index.b = params["k1"], params["b"]
        index.analyzer = get_analyzer(params["analyzer"])
        index.length_norm = params["length_norm"]
        index._lock = threading.Lock()
        index._scratch_folder = None
        terms = json.loads((folder / "vocabulary.json").read_text(encoding="utf-8"))
        index.vocabulary = {t: i for i, t in enumerate(terms)}
        index.doc_ids = StringStore.load(folder / "doc_ids.bin")
        index._texts = StringStore.load(folder / "texts.bin")
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r")
                  for name in ("indptr", "docs", "tfs", "doc_lengths")}
        index._set_postings(**arrays)
        return index


class TopKArrays(NamedTuple):
    """Top-k results of a batch of queries as arrays. ``doc_indices`` (queries × k, int64) index the
    index's ``doc_ids``, best first, ties by position; ``scores`` (queries × k, float64); ``counts``: how
    many documents matched each query; entries past a query's count are -1 and 0."""

    doc_indices: np.ndarray
    scores: np.ndarray
    counts: np.ndarray


# Building hundreds of thousands of hits is the costliest part left in Python. tuple.__new__ bound to Hit
# runs in C (Hit._make is a Python call per hit), and the hits hold no reference cycles, so the cyclic
# garbage collector, which the allocations would trigger hundreds of times, has nothing to find: pausing
# it took hit building for 1,127 queries x top 100 from 0.14 s to 0.035 s.
_make_hit = partial(tuple.__new__, Hit)


@contextmanager
def _collector_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _as_document(row, position: int) -> Document:
    if isinstance(row, Document):
        return row
    if isinstance(row, dict):
        if "_id" not in row or "text" not in row:
            raise InputError(f"corpus row {position} needs '_id' and 'text' keys, has {sorted(row)}")
        return Document(str(row["_id"]), row.get("title") or "", row["text"] or "")
    raise TypeError(f"corpus row {position} must be a dict with '_id', 'title', 'text' or a Document, "
                    f"got {type(row).__name__}")
