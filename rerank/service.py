"""Reranking over HTTP, in the APIs search engines and clients already speak.

- ``POST /v1/rerank`` (Cohere/Jina style): ``{"query", "documents", "top_n", "return_documents"}`` →
  ``{"results": [{"index", "relevance_score"[, "document": {"text"}]}]}``, best first; scores are
  probabilities (sigmoid of the logit), as those clients expect. ``"raw_scores": true`` (an esrerank
  extension, as in TEI) returns the logits instead.
- ``POST /rerank`` (Text-Embeddings-Inference style): ``{"query", "texts", "raw_scores", "truncate"}`` →
  ``[{"index", "score"[, "text"]}]``, best first; ``raw_scores`` returns logits.
- ``GET /health`` (never needs a key: load balancers probe it), ``GET /metrics`` (Prometheus text format).

With an API key, every route but ``/health`` answers 401 unless the request carries
``Authorization: Bearer <key>``.

Each score is written as a number of at most 18 characters (:func:`json_score`): ML Commons reads the
service's answer with json-smart, which turns longer decimals (what Python writes for most doubles, e.g.
``0.45869871725178923`` or ``-3.4000000953674316``) into BigDecimals, and its Cohere post-processing then
fails with a ClassCastException. 18 characters still carry every float32 logit exactly.

Requests from concurrent clients are batched together: one worker thread owns the model and takes
queued requests until their pairs fill a token budget or the oldest has waited ``max_wait_ms``, then
scores them in one ``CrossEncoder.predict`` call (which sorts by length and cuts token-budget batches).
Limits on body size, documents per request and text length answer 4xx JSON errors; nothing a client
sends can stop the service. The standard library's threading HTTP server is enough here: the work is
in the model, and it needs no further dependency.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from .errors import InputError, ServiceError

logger = logging.getLogger(__name__)


class RequestError(InputError):
    """A request the service answers with a 4xx status."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class ServiceLimits:
    """max_body_bytes: 8 MiB. max_docs: documents per request (1,000). max_text_chars: characters of
    one query or document (100,000; longer texts would be truncated to max_length tokens anyway)."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_docs: int = 1000
    max_text_chars: int = 100_000


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


class DynamicBatcher:
    """One worker thread owns the model; requests wait in a queue and are scored together.

    max_batch_tokens: stop collecting requests once their pairs hold about this many tokens (estimated
    from characters, 4 per token). max_wait_ms: the longest the first request of a batch waits for
    company; 0 turns batching off (each request is scored alone)."""

    def __init__(self, model, max_batch_tokens: int = 65_536, max_wait_ms: float = 5.0, metrics: Metrics | None = None):
        self.model = model
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000
        self.metrics = metrics or Metrics()
        self.queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._run, name="reranker", daemon=True)
        self.worker.start()

    def score(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        future: Future = Future()
        self.queue.put((pairs, future))
        return future.result()

    def close(self) -> None:
        self._stop.set()
        self.queue.put(None)
        self.worker.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self.queue.get()
            if first is None:
                return
            jobs = [first]
            tokens = _estimate_tokens(first[0])
            deadline = time.monotonic() + self.max_wait_s
            while self.max_wait_s > 0 and tokens < self.max_batch_tokens:
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


def json_score(value) -> float:
    """A score as a JSON number every engine reads as a double: the most precise decimal whose text has
    at most 18 characters (sign, point and exponent included), always with a point or an exponent
    (``json`` writes ``1.0``, not ``1``, for a float). json-smart, the parser behind ML Commons'
    JSONPath, reads a longer decimal as a BigDecimal and an integer as an Integer; the Cohere
    post-processing then fails casting it to Double. A float32 logit needs 9 significant digits, so
    it comes back as the same float32."""
    value = float(value)
    for digits in range(17, 0, -1):
        candidate = float(f"{value:.{digits}g}")
        if len(repr(candidate)) <= MAX_NUMBER_CHARS:
            return candidate
    return candidate


MAX_NUMBER_CHARS = 18  # json-smart's JSONParserBase.extractFloat: longer texts become BigDecimal


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _text(value, what: str, limits: ServiceLimits) -> str:
    if isinstance(value, dict):  # Cohere accepts {"text": ...} documents
        value = value.get("text")
    if not isinstance(value, str):
        raise RequestError(422, f"{what} must be a string")
    if len(value) > limits.max_text_chars:
        raise RequestError(413, f"{what} has {len(value)} characters; the limit is {limits.max_text_chars}")
    return value


def _documents(body: dict, key: str, limits: ServiceLimits) -> list[str]:
    documents = body.get(key)
    if not isinstance(documents, list):
        raise RequestError(422, f"'{key}' must be a list of strings")
    if len(documents) > limits.max_docs:
        raise RequestError(413, f"{len(documents)} documents; the limit is {limits.max_docs} per request")
    return [_text(d, f"{key}[{i}]", limits) for i, d in enumerate(documents)]


def handle_cohere(body: dict, batcher: DynamicBatcher, limits: ServiceLimits) -> dict:
    query = _text(body.get("query"), "'query'", limits)
    documents = _documents(body, "documents", limits)
    top_n = body.get("top_n", len(documents))
    if not isinstance(top_n, int) or top_n < 0:
        raise RequestError(422, "'top_n' must be a non-negative integer")
    raw_scores = body.get("raw_scores", False)
    if not isinstance(raw_scores, bool):
        raise RequestError(422, "'raw_scores' must be true or false")
    raw = batcher.score([(query, d) for d in documents]) if documents else np.zeros(0)
    scores = raw.astype(np.float64) if raw_scores else _sigmoid(raw)
    order = np.argsort(-scores, kind="stable")[:top_n]
    results = []
    for i in order:
        entry = {"index": int(i), "relevance_score": json_score(scores[i])}
        if body.get("return_documents"):
            entry["document"] = {"text": documents[i]}
        results.append(entry)
    return {"results": results}


def handle_tei(body: dict, batcher: DynamicBatcher, limits: ServiceLimits) -> list:
    query = _text(body.get("query"), "'query'", limits)
    texts = _documents(body, "texts", limits)
    raw = batcher.score([(query, t) for t in texts]) if texts else np.zeros(0)
    scores = raw.astype(np.float64) if body.get("raw_scores") else _sigmoid(raw)
    order = np.argsort(-scores, kind="stable")
    results = []
    for i in order:
        entry = {"index": int(i), "score": json_score(scores[i])}
        if body.get("return_text"):
            entry["text"] = texts[i]
        results.append(entry)
    return results


ROUTES = {"/v1/rerank": handle_cohere, "/rerank": handle_tei}


def make_handler(batcher: DynamicBatcher, limits: ServiceLimits, model_name: str, api_key: str | None = None):
    expected_authorization = f"Bearer {api_key}".encode() if api_key else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so load tests measure the service, not TCP set-up

        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, payload, content_type: str = "application/json") -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="esrerank"')
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if expected_authorization is None:
                return True
            given = (self.headers.get("Authorization") or "").strip().encode()
            return hmac.compare_digest(given, expected_authorization)  # constant time: no key guessing by timing

        def _unauthorized(self) -> None:
            message = ("missing Authorization header; send 'Authorization: Bearer <key>'"
                       if not self.headers.get("Authorization") else "wrong API key")
            self._send(401, {"error": {"type": "unauthorized", "message": message}})

        def do_GET(self):  # noqa: N802 - the base class's name
            if self.path == "/health":
                self._send(200, {"status": "ok", "model": model_name})
            elif not self._authorized():
                self._unauthorized()
            elif self.path == "/metrics":
                self._send(200, batcher.metrics.render(batcher.queue.qsize()), "text/plain; version=0.0.4")
            else:
                self._send(404, {"error": {"type": "not_found", "message": f"no route {self.path}"}})

        def do_POST(self):  # noqa: N802
            started = time.perf_counter()
            status = 200
            try:
                if not self._authorized():
                    status = 401
                    self.close_connection = True  # the body is not read: the connection cannot be reused
                    self._unauthorized()
                    return
                handler = ROUTES.get(self.path)
                if handler is None:
                    raise RequestError(404, f"no route {self.path}; use /v1/rerank or /rerank")
                length = int(self.headers.get("Content-Length") or 0)
                if length > limits.max_body_bytes:
                    self.close_connection = True  # the body is not read: the connection cannot be reused
                    raise RequestError(413, f"body of {length} bytes; the limit is {limits.max_body_bytes}")
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise RequestError(400, f"malformed JSON: {exc}") from None
                if not isinstance(body, dict):
                    raise RequestError(422, "the body must be a JSON object")
                self._send(200, handler(body, batcher, limits))
            except RequestError as exc:
                status = exc.status
                self._send(status, {"error": {"type": HTTPStatus(status).phrase.lower().replace(" ", "_"),
                                              "message": str(exc)}})
            except Exception as exc:  # a bug must not take the service down; the client gets a 500
                logger.exception("request failed")
                status = 500
                self._send(500, {"error": {"type": "internal_error", "message": str(exc)}})
            finally:
                batcher.metrics.request(self.path, status, time.perf_counter() - started)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that gave up (an engine's read timeout, a closed load-test client) is not a fault of
        # the service: one log line, not the standard library's traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            logger.info("client %s went away before the answer was sent (%s)", client_address[0], type(error).__name__)
        else:
            super().handle_error(request, client_address)


class RerankService:
    """The HTTP service around one model. ``start()`` serves in a background thread (tests, benchmarks);
    ``serve_forever()`` blocks (the CLI).

    api_key: when set, requests need ``Authorization: Bearer <api_key>`` (all routes but ``/health``).
        Default None: no key, for a service only loopback or a private network reaches."""

    def __init__(self, model, host: str = "127.0.0.1", port: int = 8080, max_batch_tokens: int = 65_536,
                 max_wait_ms: float = 5.0, limits: ServiceLimits | None = None, model_name: str = "",
                 api_key: str | None = None):
        if api_key is not None and (not api_key.strip() or api_key != api_key.strip()):
            raise ServiceError("the API key is empty or has surrounding whitespace")
        self.batcher = DynamicBatcher(model, max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms)
        try:
            self.server = _Server((host, port), make_handler(self.batcher, limits or ServiceLimits(), model_name,
                                                             api_key))
        except OSError as exc:
            self.batcher.close()
            raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "RerankService":
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        logger.info("serving on %s", self.url)
        try:
            self.server.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        self.server.shutdown() if self._thread else None
        self.server.server_close()
        self.batcher.close()
