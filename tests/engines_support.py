"""Reaching the real servers the engine tests need (started by `bash .ci/servers.sh start`)."""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest

URLS = {
    "elasticsearch": os.environ.get("ESRERANK_ES_URL", "http://127.0.0.1:9200"),
    "opensearch": os.environ.get("ESRERANK_OS_URL", "http://127.0.0.1:9201"),
    # OpenSearch 2.19.1 with ML Commons and neural-search: reranking inside the engine
    "opensearch-ml": os.environ.get("ESRERANK_OS_ML_URL", "http://127.0.0.1:9202"),
    # Elasticsearch 9.1.0 with security off (servers.sh start secure): the secured 9.1.0 node's twin
    "elasticsearch9": os.environ.get("ESRERANK_ES9_URL", "http://127.0.0.1:9205"),
    # three OpenSearch 3.6.0 nodes (servers.sh start opensearch-cluster), every node named
    "opensearch-cluster": os.environ.get("ESRERANK_OS_CLUSTER_URL",
                                         "http://127.0.0.1:9211,http://127.0.0.1:9212,http://127.0.0.1:9213"),
}


def require_server(engine: str) -> str:
    """The engine's URL; skip (or fail, where CI requires servers) when nothing answers there."""
    url = URLS[engine]
    try:
        with urllib.request.urlopen(f"{url.split(',')[0]}/_cluster/health", timeout=3) as response:
            response.read()
    except OSError as exc:
        server_missing(f"no {engine} at {url} ({exc}); start one with: bash .ci/servers.sh start {engine}")
    return url


def server_missing(message: str) -> None:
    """Skip the test, or fail it where CI requires the servers ($ESRERANK_REQUIRE_SERVERS=1)."""
    if os.environ.get("ESRERANK_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A loopback port nothing listens on (bound and closed again): for a service to start on, or to
    point at one that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
