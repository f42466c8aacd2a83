"""Reranking over HTTP, in the APIs search engines and clients already speak.

- ``POST /v1/rerank`` (Cohere/Jina style): ``{"query", "documents", "top_n", "return_documents"}`` →
  ``{"results": [{"index", "relevance_score"[, "document": {"text"}]}]}``, best first; scores are
  probabilities (sigmoid of the logit), as those clients expect. ``"raw_scores": true`` (an esrerank
  extension, as in TEI) returns the logits instead.
- ``POST /v2/rerank`` (Cohere v2: the cohere SDK's ``ClientV2``): ``{"model", "query", "documents", "top_n",
  "max_tokens_per_doc"}`` → ``{"id", "results": [{"index", "relevance_score"}], "meta"}``, best first,
  probabilities.
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
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from esrerank_errors import RequestError, ServiceError

from .batching import DynamicBatcher
from .metrics import Metrics
from .rerank_api import ROUTES, ServiceConfig, handle_cohere, handle_cohere_v2, handle_tei, json_score

__all__ = ["DynamicBatcher", "Metrics", "RerankService", "ServiceConfig",
           "handle_cohere", "handle_cohere_v2", "handle_tei", "json_score"]

logger = logging.getLogger(__name__)


def make_handler(batcher: DynamicBatcher, limits: ServiceConfig, model_name: str, api_key: str | None = None):
    expected_authorization = f"Bearer {api_key}".encode() if api_key else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so load tests measure the service, not TCP set-up
        # TCP_NODELAY: with Nagle's algorithm on, an answer's last segment waited for the client's delayed
        # ACK, ~40 ms a request on Linux loopback (a 10-document request took 400 ms served, 360 in-process).
        disable_nagle_algorithm = True

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

        def _refusal(self) -> RequestError:
            return RequestError(401, "missing Authorization header; send 'Authorization: Bearer <key>'"
                                if not self.headers.get("Authorization") else "wrong API key")

        def _send_error(self, error: RequestError) -> None:
            self._send(error.status, {"error": {"type": HTTPStatus(error.status).phrase.lower().replace(" ", "_"),
                                                "message": str(error)}})

        def do_GET(self):  # noqa: N802 - the base class's name
            if self.path == "/health":
                self._send(200, {"status": "ok", "model": model_name})
            elif not self._authorized():
                self._send_error(self._refusal())
            elif self.path == "/metrics":
                self._send(200, batcher.metrics.render(batcher.queue.qsize()), "text/plain; version=0.0.4")
            else:
                self._send_error(RequestError(404, f"no route {self.path}"))

        def do_POST(self):  # noqa: N802
            started = time.perf_counter()
            status = 200
            try:
                if not self._authorized():
                    self.close_connection = True  # the body is not read: the connection cannot be reused
                    raise self._refusal()
                handler = ROUTES.get(self.path)
                if handler is None:
                    raise RequestError(404, f"no route {self.path}; use /v1/rerank, /v2/rerank or /rerank")
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
                self._send_error(exc)
            except Exception as exc:  # a bug must not take the service down; the client gets a 500
                logger.exception("request failed")
                status = 500
                self._send(500, {"error": {"type": "internal_error", "message": str(exc)}})
            finally:
                batcher.metrics.request(self.path, status, time.perf_counter() - started)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # an engine's shards connect all at once; the default backlog of 5 drops SYNs

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._open: set = set()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """End the keep-alive connections still open: their handler threads would otherwise answer later
        requests on them with a closed reranker (an engine pools its connections and reuses them)."""
        import socket

        with self._open_lock:
            open_now = list(self._open)
        for request in open_now:
            try:
                request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

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

    def __init__(self, model, host: str = "127.0.0.1", port: int = 8080, gather_tokens: int = 65_536,
                 max_wait_ms: float = 5.0, limits: ServiceConfig | None = None, model_name: str = "",
                 api_key: str | None = None):
        if api_key is not None and (not api_key.strip() or api_key != api_key.strip()):
            raise ServiceError("the API key is empty or has surrounding whitespace")
        self.batcher = DynamicBatcher(model, gather_tokens=gather_tokens, max_wait_ms=max_wait_ms)
        try:
            self.server = _Server((host, port), make_handler(self.batcher, limits or ServiceConfig(), model_name,
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
        self.server.close_open_connections()
        self.batcher.close()
