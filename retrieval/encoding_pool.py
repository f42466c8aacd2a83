"""Term encoding of a stream of batches on several processes, for large in-memory builds.

Analysis is most of the cost of building an in-memory index (it is Python: regular expressions and dict
lookups), and a process per core multiplies it. Each worker keeps its own :class:`TermEncoder`, with its
own term ids; with every batch it returns the terms it met for the first time, in the order it numbered
them, and the parent maps them to one shared vocabulary. Results come back in the batches' order, at
most ``workers + 1`` batches in flight.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from itertools import islice
from typing import Iterable, Iterator

import numpy as np

from .analysis import TermEncoder

_worker_encoder: TermEncoder | None = None


def _start_worker(analyzer_name: str) -> None:
    global _worker_encoder
    _worker_encoder = TermEncoder(analyzer_name)


def _encode(texts: list[str]) -> tuple[int, np.ndarray, np.ndarray, list[str]]:
    known = len(_worker_encoder.vocabulary)
    ids, lengths = _worker_encoder.encode(texts)
    return os.getpid(), ids, lengths, list(islice(_worker_encoder.vocabulary, known, None))


class EncodingPool:
    """``encode_batches(text_batches)``: term ids of each batch's texts, in order, against one
    ``vocabulary``. ``workers=1`` encodes in this process."""

    def __init__(self, analyzer_name: str, workers: int = 1):
        self.vocabulary: dict[str, int] = {}
        self.workers = workers
        self._local = TermEncoder(analyzer_name, self.vocabulary) if workers == 1 else None
        self._pool = None
        if workers > 1:
            # spawn: numba's threads and other libraries' state do not survive a fork safely
            context = multiprocessing.get_context("spawn")
            self._pool = context.Pool(workers, initializer=_start_worker, initargs=(analyzer_name,))
        self._to_global: dict[int, np.ndarray] = {}

    def encode_batches(self, text_batches: Iterable[list[str]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, lengths)`` for each batch of texts, in order (see ``TermEncoder.encode``)."""
        if self._pool is None:
            for texts in text_batches:
                yield self._local.encode(texts)
            return
        pending: deque = deque()
        for texts in text_batches:
            pending.append(self._pool.apply_async(_encode, (texts,)))
            if len(pending) > self.workers:
                yield self._collect(pending.popleft())
        while pending:
            yield self._collect(pending.popleft())

    def _collect(self, result) -> tuple[np.ndarray, np.ndarray]:
        worker, ids, lengths, new_terms = result.get()
        mapping = self._to_global.get(worker, np.zeros(0, dtype=np.int32))
        added = np.fromiter((self.vocabulary.setdefault(term, len(self.vocabulary)) for term in new_terms),
                            dtype=np.int32, count=len(new_terms))
        self._to_global[worker] = mapping = np.concatenate([mapping, added])
        return mapping[ids], lengths

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> "EncodingPool":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
