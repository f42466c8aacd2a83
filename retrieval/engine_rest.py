"""Talking to an Elasticsearch or OpenSearch server: one ``request`` call over either client library.

Both engines speak the same REST API for everything esrerank uses, so the rest of ``retrieval`` sends
plain REST requests through a thin adapter per client library (``elasticsearch`` and ``opensearch-py``).
An adapter checks the server URL, spreads requests over a cluster's nodes, and turns each library's
exceptions into esrerank's :class:`EngineError` / :class:`EngineUnavailable`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable
from urllib.parse import urlsplit

from esrerank_errors import DataError, EngineError, EnginePermissionError, EngineUnavailable, InputError

from .engine_connection import EngineConnection, as_connection, redact_text, split_nodes


def check_url(url: str) -> str:
    """The URL of a server, refused early unless it is http(s)://host[:port][/path]; the error shows no
    credentials the URL may hold."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise DataError(redact_text(url), "not a server URL: give http(s)://HOST:PORT, e.g. http://127.0.0.1:9200")
    try:
        parts.port
    except ValueError:
        raise DataError(redact_text(url), "the port is not a number") from None
    return url


def node_urls(url: str) -> list[str]:
    """The nodes of ``url``: one URL, or several separated by commas (nodes of one cluster)."""
    nodes = [check_url(node) for node in split_nodes(url)]
    if not nodes:
        raise DataError(redact_text(url), "no server URL given")
    return nodes


def _failover(nodes: list[str], sniff: bool) -> dict:
    """Client options shared by both libraries: a request whose node cannot be reached goes to another
    node (connection errors only: 429s are the bulk loader's to retry with backoff, and other statuses
    are answers); with ``sniff`` the client asks the cluster for its other nodes at start and on failure."""
    retries = len(nodes) - 1 if not sniff else max(len(nodes) - 1, 4)
    return {"max_retries": retries, "retry_on_status": (), "retry_on_timeout": False, "sniff_on_start": sniff}


class _Rest:
    """What both adapters share: the connection, and the libraries' failures as esrerank's errors."""

    engine = "engine"

    def __init__(self, connection: EngineConnection | str):
        self.connection = as_connection(connection)
        self.nodes = node_urls(self.connection.url)
        self.url = self.connection.shown_url  # what errors and logs show: never a secret

    def _unreachable(self, exc: Exception) -> EngineUnavailable:
        return EngineUnavailable(self.url, unreachable_reason(self.connection.scrub(_failure_text(exc)),
                                                              self.connection))

    def _refused(self, status: int, reason: str, path: str) -> EngineError:
        reason = self.connection.scrub(reason)
        if status == 401:
            return EngineError(401, f"{self.engine} at {self.url} refused {_who(self.connection)}: {reason}")
        if status == 403:
            return permission_error(self.engine, self.url, reason, path)
        return EngineError(status, reason)


class ElasticsearchRest(_Rest):
    """REST requests through the ``elasticsearch`` client."""

    engine = "elasticsearch"

    def __init__(self, connection: EngineConnection | str, request_timeout: float, sniff: bool = False):
        import elasticsearch

        super().__init__(connection)
        self._errors = elasticsearch
        self.client = elasticsearch.Elasticsearch(self.nodes, request_timeout=request_timeout,
                                                  sniff_on_node_failure=sniff, **_failover(self.nodes, sniff),
                                                  **self.connection.client_options(self.engine))

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        headers = {"accept": "application/json"}
        if isinstance(body, str):
            headers["content-type"] = "application/x-ndjson"
        elif body is not None:
            headers["content-type"] = "application/json"
        try:
            return self.client.perform_request(method, path, params=params, headers=headers, body=body).body
        except self._errors.ApiError as exc:
            raise self._refused(exc.meta.status, error_reason(exc.body) or str(exc), path) from None
        except (self._errors.ConnectionError, self._errors.ConnectionTimeout) as exc:
            raise self._unreachable(exc) from None


class OpenSearchRest(_Rest):
    """REST requests through the ``opensearch-py`` client (the ``opensearch`` extra)."""

    engine = "opensearch"

    def __init__(self, connection: EngineConnection | str, request_timeout: float, sniff: bool = False):
        try:
            import opensearchpy
        except ImportError:
            raise InputError("OpenSearch needs its client, an optional extra: pip install 'esrerank[opensearch]'"
                             ) from None

        super().__init__(connection)
        self._errors = opensearchpy
        self.client = opensearchpy.OpenSearch(self.nodes, timeout=request_timeout, sniff_on_connection_fail=sniff,
                                              pool_maxsize=16,  # parallel bulk workers share the client
                                              **_failover(self.nodes, sniff),
                                              **self.connection.client_options(self.engine))

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        headers = {"content-type": "application/x-ndjson"} if isinstance(body, str) else None
        try:
            return self.client.transport.perform_request(method, path, params=params, body=body, headers=headers)
        except self._errors.ConnectionError as exc:
            raise self._unreachable(exc) from None
        except self._errors.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            raise self._refused(status, error_reason(exc.info) or str(exc), path) from None


ADAPTERS = {"elasticsearch": ElasticsearchRest, "opensearch": OpenSearchRest}


def rest_client(engine: str, connection: EngineConnection | str, request_timeout: float = 120.0):
    """The engine's REST adapter alone: ``request(method, path, body=None, params=None)`` returning the
    parsed answer and raising :class:`EngineError` (for cluster-level APIs: ML Commons, pipelines).
    ``connection``: an :class:`~retrieval.engine_connection.EngineConnection`, or a URL."""
    try:
        adapter = ADAPTERS[engine]
    except KeyError:
        raise InputError(f"unknown engine {engine!r}; choose one of {sorted(ADAPTERS)}") from None
    return adapter(connection, request_timeout)


# --- failures a user can act on ----------------------------------------------------------------------

HOST_NAME_HINT = "connect with a name the certificate lists (a development cluster's is often localhost)"
CA_HINT = ("give the CA that signed it with --ca-certs FILE (Elasticsearch: config/certs/http_ca.crt; OpenSearch: "
           "its root-ca.pem)")


def unreachable_reason(message: str, connection: EngineConnection) -> str:
    """Why a cluster could not be reached, in one line that says what to do, from a client library's
    message (which nests urllib3's and ssl's exceptions)."""
    text = " ".join(message.split())
    mismatch = re.search(r"hostname '[^']*' doesn't match [^|]*", text)  # urllib3's own check (given a CA file)
    if mismatch:
        detail = mismatch.group(0).strip()
        return f"the cluster's certificate is not valid for this host name ({detail}): {HOST_NAME_HINT}"
    verify = re.search(r"certificate verify failed: ([^(]*?)\s*\(_ssl", text)
    if verify:
        detail = verify.group(1).strip().rstrip(".")
        if "mismatch" in detail.lower() or "not valid for" in detail.lower():
            return f"the cluster's certificate is not valid for this host name ({detail}): {HOST_NAME_HINT}"
        return f"the cluster's certificate is not trusted ({detail}): {CA_HINT}"
    if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "packet length too long" in text:
        return "the server does not speak TLS on this port: use http://, not https://"
    if any(alert in text for alert in ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA")):
        return ("the cluster refused this client's certificate (or wants one): give a certificate its CA signed "
                "with --client-cert FILE --client-key FILE")
    errno = next((text[text.index(marker):].split(")")[0].split(" | ")[0].strip(" '\"")
                  for marker in ("[Errno", "timed out", "Connection refused") if marker in text), None)
    if not connection.secure and any(marker in text for marker in ("RemoteDisconnected", "Connection reset by peer",
                                                                   "Connection aborted", "BadStatusLine")):
        return (f"{errno or 'the server closed the connection without an answer'} (if the cluster has TLS on, "
                "as Elasticsearch 8 and 9 and OpenSearch with its security plugin do, use https://)")
    ssl_error = re.search(r"\[SSL[^\]]*\][^()|]*", text)
    if ssl_error:
        return f"TLS failed: {ssl_error.group(0).strip()}"
    if errno:
        return errno
    return text if len(text) <= 300 else text[:300] + "…"


def _failure_text(exc: BaseException) -> str:
    """Everything a client's connection error says: its message, the errors it gathered, and the exceptions
    it was raised from (elasticsearch-py's own message is only "Connection error" when it made one try)."""
    parts, seen = [], set()
    pending = [exc]
    while pending:
        error = pending.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        parts.append(str(error))
        pending += list(getattr(error, "errors", ()) or ()) + [error.__cause__, error.__context__]
    return " | ".join(part for part in parts if part)


def _who(connection: EngineConnection) -> str:
    if connection.username:
        return f"the password of user {connection.username!r}"
    if connection.bearer_token:
        return "the bearer token"
    if connection.api_key:
        return "the API key"
    return ("a request without credentials: give --user NAME with --password-file FILE "
            "($ESRERANK_ENGINE_PASSWORD), or --engine-token-file, or --engine-api-key-file")


def permission_error(engine: str, url: str, reason: str, path: str = "") -> EnginePermissionError:
    """A 403 as one line: the user, the privilege refused, the index (the engine's word, else the request's),
    and what grants it where the engine says."""
    action = re.search(r"(?:no permissions for|action) \[([^\]]+)\]", reason)
    user = re.search(r"(?:User \[name=|for user \[)([^,\]]+)", reason)
    indices = re.search(r"on indices \[([^\]]+)\]", reason)
    granted = re.search(r"granted by the (?:index|cluster) privileges \[([^\]]+)\]", reason)
    if not action:
        return EnginePermissionError(None, None, f"{engine} at {url} refused the request: {reason}")
    privilege = action.group(1)
    index = indices.group(1) if indices else None
    first = path.lstrip("/").split("/")[0]
    if index is None and privilege.startswith("indices:") and first and not first.startswith("_"):
        index = first  # OpenSearch names the action alone; the request names the index
    where = f" on {index}" if index else ""
    who = f"user {user.group(1)!r}" if user else "this user"
    line = f"{engine} at {url} refused {who} the privilege {privilege}{where}"
    if granted:
        line += f" (granted by {granted.group(1).replace(',', ', ')})"
    return EnginePermissionError(privilege, index, line)


def error_reason(body: Any) -> str:
    """The reason an engine gives in an error answer, or in one item of a ``_bulk`` answer."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        causes = error.get("root_cause") or []
        if error.get("type") == "search_phase_execution_exception" and causes and isinstance(causes[0], dict):
            # "all shards failed" says nothing; the shards' own reason does
            return f"{causes[0].get('type')}: {causes[0].get('reason')}"
        return f"{error.get('type')}: {error.get('reason')}"
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    if isinstance(body, str) and body.lstrip().startswith("<"):
        return "the answer is HTML, not JSON: is this URL an Elasticsearch/OpenSearch server?"
    return " ".join(str(body).split())[:500] if body else ""


def ndjson(lines: Iterable[dict]) -> str:
    """The body of a ``_bulk`` or ``_msearch`` request: one JSON document a line."""
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
