"""The reranking service's counters, rendered in Prometheus' text format (``GET /metrics``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Metrics:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: dict = field(default_factory=dict)  # (endpoint, status) → count
    documents: int = 0
    batches: int = 0
    batched_requests: int = 0
    latency_seconds_sum: float = 0.0
    latency_count: int = 0

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (endpoint, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.latency_seconds_sum += seconds
            self.latency_count += 1

    def render(self, queue_depth: int) -> str:
        with self.lock:
            lines = ["# TYPE esrerank_requests_total counter"]
            lines += [f'esrerank_requests_total{{endpoint="{e}",status="{s}"}} {n}'
                      for (e, s), n in sorted(self.requests.items())]
            lines += ["# TYPE esrerank_documents_total counter", f"esrerank_documents_total {self.documents}",
                      "# TYPE esrerank_batches_total counter", f"esrerank_batches_total {self.batches}",
                      "# TYPE esrerank_batched_requests_total counter",
                      f"esrerank_batched_requests_total {self.batched_requests}",
                      "# TYPE esrerank_request_seconds summary",
                      f"esrerank_request_seconds_sum {self.latency_seconds_sum:.6f}",
                      f"esrerank_request_seconds_count {self.latency_count}",
                      "# TYPE esrerank_queue_depth gauge", f"esrerank_queue_depth {queue_depth}"]
        return "\n".join(lines) + "\n"
