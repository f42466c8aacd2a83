"""Dynamic batching: one worker thread owns the model and scores queued requests together."""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from esrerank_errors import ServiceError

from .metrics import Metrics

logger = logging.getLogger(__name__)


class DynamicBatcher:
    """One worker thread owns the model; requests wait in a queue and are scored together.

    gather_tokens: stop collecting requests once their pairs hold about this many tokens (estimated
    from characters, 4 per token). max_wait_ms: the longest the first request of a batch waits for
    company; 0 turns batching off (each request is scored alone)."""

    def __init__(self, model, gather_tokens: int = 65_536, max_wait_ms: float = 5.0, metrics: Metrics | None = None):
        self.model = model
        self.gather_tokens = gather_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.metrics = metrics or Metrics()
        self.queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._run, name="reranker", daemon=True)
        self.worker.start()

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if self._stop.is_set():
            raise ServiceError("the reranker is shut down")
        future: Future = Future()
        self.queue.put((pairs, future))
        return future.result()

    def close(self) -> None:
        self._stop.set()
        self.queue.put(None)
        self.worker.join(timeout=10)
        # a request queued while the worker stopped would wait forever: answer it
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job[1].set_exception(ServiceError("the reranker is shut down"))

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self.queue.get()
            if first is None:
                return
            jobs = [first]
            tokens = _estimate_tokens(first[0])
            deadline = time.monotonic() + self.max_wait_s
            while self.max_wait_s > 0 and tokens < self.gather_tokens:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    job = self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if job is None:
                    self._stop.set()
                    break
                jobs.append(job)
                tokens += _estimate_tokens(job[0])
            pairs = [pair for job_pairs, _ in jobs for pair in job_pairs]
            rankings = [n for n, (job_pairs, _) in enumerate(jobs) for _ in job_pairs]  # one per request
            try:
                scores = self.model.predict(pairs, rankings) if pairs else np.zeros(0, dtype=np.float32)
            except Exception as exc:  # report to every waiting request; the worker lives on
                logger.exception("scoring failed")
                for _, future in jobs:
                    future.set_exception(exc)
                continue
            with self.metrics.lock:
                self.metrics.batches += 1
                self.metrics.batched_requests += len(jobs)
                self.metrics.documents += len(pairs)
            offset = 0
            for job_pairs, future in jobs:
                future.set_result(scores[offset: offset + len(job_pairs)])
                offset += len(job_pairs)


def _estimate_tokens(pairs) -> int:
    return sum(len(q) + len(d) for q, d in pairs) // 4 + 1
