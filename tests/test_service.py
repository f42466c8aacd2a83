"""The HTTP reranking service, on loopback, with a small real model."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from rerank.cross_encoder import CrossEncoder
from rerank.service import RerankService, ServiceLimits


@pytest.fixture(scope="module")
def service(tiny_cross_encoder):
    model = CrossEncoder(str(tiny_cross_encoder), max_length=64, dtype="float32")
    running = RerankService(model, port=0, max_wait_ms=20, limits=ServiceLimits(max_docs=100, max_text_chars=5000),
                            model_name="tiny").start()
    yield running, model
    running.close()


def request(service, method, path, body=None, raw=None):
    host, port = service.server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    content_type = response.getheader("Content-Type")
    return response.status, json.loads(payload) if content_type == "application/json" else payload.decode()


def test_cohere_and_tei_scores_equal_predict(service):
    running, model = service
    docs = ["bm25 ranks documents", "cross-encoders read query and document together", "bananas"]
    expected = model.predict([("how do rerankers work", d) for d in docs])
    status, body = request(running, "POST", "/v1/rerank", {"query": "how do rerankers work", "documents": docs,
                                                            "top_n": 2, "return_documents": True})
    assert status == 200 and len(body["results"]) == 2
    order = np.argsort(-expected)
    assert [r["index"] for r in body["results"]] == order[:2].tolist()
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(1 / (1 + np.exp(-expected[order[:2]])), abs=1e-6)
    assert body["results"][0]["document"]["text"] == docs[order[0]]
    status, body = request(running, "POST", "/rerank", {"query": "how do rerankers work", "texts": docs, "raw_scores": True})
    assert status == 200 and [r["index"] for r in body] == order.tolist()
    assert [r["score"] for r in body] == pytest.approx(expected[order].tolist(), abs=1e-5)


def test_concurrent_requests_are_batched_and_answered_correctly(service):
    running, model = service
    queries = [f"query number {i} about ranking" for i in range(12)]
    docs = ["a document about ranking", "something else", "ranking functions and bm25"]
    results = {}

    def client(query):
        results[query] = request(running, "POST", "/rerank", {"query": query, "texts": docs, "raw_scores": True})[1]

    before = running.batcher.metrics.batches
    threads = [threading.Thread(target=client, args=(q,)) for q in queries]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert running.batcher.metrics.batches - before < len(queries)  # some requests shared a model call
    for query in queries:
        expected = model.predict([(query, d) for d in docs])
        got = {r["index"]: r["score"] for r in results[query]}
        assert [got[i] for i in range(3)] == pytest.approx(expected.tolist(), abs=1e-5)


@pytest.mark.parametrize("raw,body,status,fragment", [
    (b"{not json", None, 400, "malformed JSON"),
    (None, {"documents": ["x"]}, 422, "'query' must be a string"),
    (None, {"query": "q", "documents": "x"}, 422, "must be a list"),
    (None, {"query": "q", "documents": ["d"] * 10_000}, 413, "10000 documents"),
    (None, {"query": "q" * 1_000_000, "documents": ["d"]}, 413, "characters"),
    (None, {"query": "q", "documents": ["d"], "top_n": -1}, 422, "top_n"),
])
def test_bad_requests_get_4xx_with_a_reason_and_the_service_keeps_serving(service, raw, body, status, fragment):
    running, _ = service
    got_status, got = request(running, "POST", "/v1/rerank", body, raw)
    assert got_status == status and fragment in got["error"]["message"]
    assert request(running, "POST", "/v1/rerank", {"query": "q", "documents": ["d"]})[0] == 200


def test_health_and_metrics(service):
    running, _ = service
    assert request(running, "GET", "/health") == (200, {"status": "ok", "model": "tiny"})
    status, text = request(running, "GET", "/metrics")
    assert status == 200 and "esrerank_requests_total" in text and "esrerank_batches_total" in text
    assert request(running, "GET", "/nope")[0] == 404


DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _json_path_list(body, path: str) -> list:
    """The values of a ``$.key[*].field`` JSONPath, the only form the registration files use."""
    key, field = path.removeprefix("$.").split("[*].")
    return [item[field] for item in body[key]]


def test_elasticsearch_custom_endpoint_request_is_answered_as_its_parser_reads(service):
    # The body Elasticsearch's `custom` inference service builds from docker/elasticsearch-inference-endpoint.json
    # (${query} and ${input} become JSON values), sent to the real service, read back with the file's JSONPaths.
    running, model = service
    settings = json.loads((DOCKER / "elasticsearch-inference-endpoint.json").read_text())["service_settings"]
    query, docs = "how do rerankers work", ["bm25 ranks documents", "cross-encoders read pairs", "bananas"]
    body = settings["request"].replace("${query}", json.dumps(query)).replace("${input}", json.dumps(docs))
    status, answer = request(running, "POST", urlsplit(settings["url"]).path, raw=body.encode())
    assert status == 200
    parser = settings["response"]["json_parser"]
    indices, scores = _json_path_list(answer, parser["reranked_index"]), _json_path_list(answer, parser["relevance_score"])
    expected = model.predict([(query, d) for d in docs])
    assert sorted(indices) == [0, 1, 2]
    assert scores == pytest.approx((1 / (1 + np.exp(-expected[indices]))).tolist(), abs=1e-6)


def test_opensearch_cohere_connector_request_is_answered_as_its_post_process_reads(service):
    # ML Commons' connector.pre_process.cohere.rerank supplies query, documents (a JSON array) and top_n;
    # connector.post_process.cohere.rerank reads results[*].index and results[*].relevance_score.
    running, model = service
    action = json.loads((DOCKER / "opensearch-connector.json").read_text())["actions"][0]
    assert action["pre_process_function"] == "connector.pre_process.cohere.rerank"
    query, docs = "what is bm25", ["BM25 is a ranking function", "bananas", "ranking with bm25 and tf idf"]
    body = (action["request_body"].replace("${parameters.documents}", json.dumps(docs))
            .replace("${parameters.query}", query).replace("${parameters.top_n}", str(len(docs))))
    status, answer = request(running, "POST", urlsplit(action["url"]).path, raw=body.encode())
    assert status == 200 and len(answer["results"]) == len(docs)
    by_index = {r["index"]: r["relevance_score"] for r in answer["results"]}
    expected = 1 / (1 + np.exp(-model.predict([(query, d) for d in docs])))
    assert [by_index[i] for i in range(len(docs))] == pytest.approx(expected.tolist(), abs=1e-6)
