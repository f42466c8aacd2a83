"""Talking to an Elasticsearch or OpenSearch server: one ``request`` call over either client library.

Both engines speak the same REST API for everything esrerank uses, so the rest of ``retrieval`` sends
plain REST requests through a thin adapter per client library (``elasticsearch`` and ``opensearch-py``).
An adapter checks the server URL, spreads requests over a cluster's nodes, and turns each library's
exceptions into esrerank's :class:`EngineError` / :class:`EngineUnavailable`.
"""

from __future__ import annotations

import json
from typing import Any, Iterable
from urllib.parse import urlsplit

from esrerank_errors import DataError, EngineError, EngineUnavailable, InputError


def check_url(url: str) -> str:
    """The URL of a server, refused early unless it is http(s)://host[:port][/path]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(url, "not a server URL: give http(s)://HOST:PORT, e.g. http://127.0.0.1:9200")
    try:
        parts.port
    except ValueError:
        raise DataError(url, "the port is not a number") from None
    return url


def node_urls(url: str) -> list[str]:
    """The nodes of ``url``: one URL, or several separated by commas (nodes of one cluster)."""
    nodes = [check_url(node.strip()) for node in url.split(",") if node.strip()]
    if not nodes:
        raise DataError(url, "no server URL given")
    return nodes


def _failover(nodes: list[str], sniff: bool) -> dict:
    """Client options shared by both libraries: a request whose node cannot be reached goes to another
    node (connection errors only: 429s are the bulk loader's to retry with backoff, and other statuses
    are answers); with ``sniff`` the client asks the cluster for its other nodes at start and on failure."""
    retries = len(nodes) - 1 if not sniff else max(len(nodes) - 1, 4)
    return {"max_retries": retries, "retry_on_status": (), "retry_on_timeout": False, "sniff_on_start": sniff}


class ElasticsearchRest:
    """REST requests through the ``elasticsearch`` client."""

    engine = "elasticsearch"

    def __init__(self, url: str, request_timeout: float, sniff: bool = False):
        import elasticsearch

        self._errors = elasticsearch
        nodes = node_urls(url)
        self.url = url
        self.client = elasticsearch.Elasticsearch(nodes, request_timeout=request_timeout,
                                                  sniff_on_node_failure=sniff, **_failover(nodes, sniff))

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        headers = {"accept": "application/json"}
        if isinstance(body, str):
            headers["content-type"] = "application/x-ndjson"
        elif body is not None:
            headers["content-type"] = "application/json"
        try:
            return self.client.perform_request(method, path, params=params, headers=headers, body=body).body
        except self._errors.ApiError as exc:
            raise EngineError(exc.meta.status, error_reason(exc.body) or str(exc)) from None
        except (self._errors.ConnectionError, self._errors.ConnectionTimeout) as exc:
            raise EngineUnavailable(self.url, str(exc)) from None


class OpenSearchRest:
    """REST requests through the ``opensearch-py`` client (the ``opensearch`` extra)."""

    engine = "opensearch"

    def __init__(self, url: str, request_timeout: float, sniff: bool = False):
        import opensearchpy

        self._errors = opensearchpy
        nodes = node_urls(url)
        self.url = url
        self.client = opensearchpy.OpenSearch(nodes, timeout=request_timeout, sniff_on_connection_fail=sniff,
                                              pool_maxsize=16,  # parallel bulk workers share the client
                                              **_failover(nodes, sniff))

    def request(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        headers = {"content-type": "application/x-ndjson"} if isinstance(body, str) else None
        try:
            return self.client.transport.perform_request(method, path, params=params, body=body, headers=headers)
        except self._errors.ConnectionError as exc:
            raise EngineUnavailable(self.url, str(exc)) from None
        except self._errors.TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            raise EngineError(status, error_reason(exc.info) or str(exc)) from None


ADAPTERS = {"elasticsearch": ElasticsearchRest, "opensearch": OpenSearchRest}


def rest_client(engine: str, url: str, request_timeout: float = 120.0):
    """The engine's REST adapter alone: ``request(method, path, body=None, params=None)`` returning the
    parsed answer and raising :class:`EngineError` (for cluster-level APIs: ML Commons, pipelines)."""
    try:
        return ADAPTERS[engine](url, request_timeout)
    except KeyError:
        raise InputError(f"unknown engine {engine!r}; choose one of {sorted(ADAPTERS)}") from None


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
