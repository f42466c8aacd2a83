"""`esrerank register elasticsearch` against the real Elasticsearch (8.19, `bash .ci/servers.sh start
elasticsearch`): what the command leaves on the server, and what it prints, judged by the server's own
answers to the same requests sent here with plain HTTP.

Maven Central's Elasticsearch build has no inference API (no x-pack inference plugin): there, registration
must fail in one line that carries the server's refusal and names what is missing, and leave nothing
behind. On an Elasticsearch with the inference API (docker/compose.elasticsearch.yml: a trial licence),
the endpoint it creates is read back, used through the real service, and deleted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from engines_support import require_server
from run_agreement import assert_scores_within_bound

REPO = Path(__file__).resolve().parents[2]
NAME = "esrerank-test-register"
API_KEY = "test-key-es-3b7e"


@pytest.fixture(scope="module")
def es_url() -> str:
    return require_server("elasticsearch")


def _http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    """The server's own answer: status and JSON body, errors included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _has_inference_api(es_url: str) -> bool:
    status, body = _http("GET", f"{es_url}/_inference/_all")
    return status == 200


def _register(es_url: str, service_url: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "register", "elasticsearch", "--url", es_url,
                           "--service-url", service_url, "--name", NAME, "-q"], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=120)


def _endpoint_body(service_url: str) -> dict:
    """docker/elasticsearch-inference-endpoint.json, the body documented for users who register with curl."""
    body = json.loads((REPO / "docker" / "elasticsearch-inference-endpoint.json").read_text())
    body["service_settings"]["url"] = f"{service_url}/v1/rerank"
    body["service_settings"]["secret_parameters"]["api_key"] = API_KEY
    return body


def _inference_indices(es_url: str) -> list[str]:
    status, body = _http("GET", f"{es_url}/_resolve/index/.inference*,*{NAME}*?expand_wildcards=all")
    assert status == 200, body
    return sorted(index["name"] for index in body["indices"])


def test_without_the_inference_api_register_fails_in_one_line_with_the_servers_refusal(es_url):
    if _has_inference_api(es_url):
        pytest.skip("this Elasticsearch has the inference API; the next test registers for real")
    before = _inference_indices(es_url)
    # the server's own answer to the request registration sends
    status, refusal = _http("PUT", f"{es_url}/_inference/rerank/{NAME}", _endpoint_body("http://127.0.0.1:8080"))
    assert status == 400 and refusal["error"] == f"no handler found for uri [/_inference/rerank/{NAME}] and method [PUT]"
    result = _register(es_url, "http://127.0.0.1:8080")
    assert result.returncode == 1 and result.stdout == ""  # a run that failed, nothing printed as a result
    error = result.stderr.strip()
    assert "\n" not in error and "Traceback" not in error
    assert error.startswith("esrerank: error: creating the inference endpoint: this Elasticsearch has no inference "
                            "API (the x-pack inference plugin")
    assert f"HTTP 400: {refusal['error']}" in error  # the server's reason, as the server gave it
    # nothing was created: no endpoint (the server still has no route for one) and no index
    assert _http("GET", f"{es_url}/_inference/rerank/{NAME}")[0] == 400
    assert _inference_indices(es_url) == before


def test_register_creates_the_endpoint_the_server_reports_and_reranks_with(es_url, tiny_cross_encoder):
    # Not run against Maven Central's build (no inference API); run against docker/compose.elasticsearch.yml.
    if not _has_inference_api(es_url):
        pytest.skip(f"{es_url} has no inference API (Maven Central's Elasticsearch lacks the x-pack inference "
                    "plugin); docker/compose.elasticsearch.yml starts one that has it")

    from rerank import CrossEncoder
    from rerank.service import RerankService

    model = CrossEncoder(str(tiny_cross_encoder), max_length=64, dtype="float32")
    service = RerankService(model, port=0, api_key=API_KEY, model_name="tiny").start()
    try:
        result = _register(es_url, service.url, {"ESRERANK_API_KEY": API_KEY})
        if result.returncode == 1 and "licence" in result.stderr:
            pytest.skip(f"the server's licence refuses inference: {result.stderr.strip()}")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"inference_id": NAME, "task_type": "rerank"}
        status, answer = _http("GET", f"{es_url}/_inference/rerank/{NAME}")
        assert status == 200, answer
        [endpoint] = answer["endpoints"]
        assert (endpoint["inference_id"], endpoint["task_type"], endpoint["service"]) == (NAME, "rerank", "custom")
        assert endpoint["service_settings"]["url"] == f"{service.url}/v1/rerank"
        assert API_KEY not in json.dumps(answer)  # stored as a secret, never returned
        docs = ["bm25 ranks documents", "cross-encoders read query and document together", "bananas"]
        status, reranked = _http("POST", f"{es_url}/_inference/rerank/{NAME}", {"query": "what is bm25", "input": docs})
        assert status == 200, reranked
        expected = model.predict([("what is bm25", d) for d in docs])
        got = {item["index"]: item["relevance_score"] for item in reranked["rerank"]}
        assert sorted(got) == [0, 1, 2]
        assert_scores_within_bound([got[i] for i in range(3)], expected)  # logits, from the service's batches
    finally:
        _http("DELETE", f"{es_url}/_inference/rerank/{NAME}")
        service.close()
