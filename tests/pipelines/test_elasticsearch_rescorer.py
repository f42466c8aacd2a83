"""esrerank's rescorer plugin (``plugins/elasticsearch``) inside a real Elasticsearch 8.19.21, calling a real
``esrerank serve``, searched with the real ``elasticsearch`` client.

``.ci/servers.sh`` builds the plugin with Maven, installs it with ``elasticsearch-plugin install`` and starts
the node with ``esrerank.service.url=http://127.0.0.1:$ESRERANK_RESCORE_PORT`` (9290), a 10 s answer timeout,
a 1 s connect timeout, batches of 16 documents, and the API key ``$ESRERANK_RESCORE_API_KEY`` in its keystore. These tests start the
service on that port (or, for the fault cases, stop it, or put a service there that is slow or answers 500).
The index is Cranfield, loaded with plain ``_bulk`` and the user's own mapping, on one shard and on three.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from engines_support import require_server
from run_agreement import assert_same_measures_but_near_ties, assert_scores_within_bound, reproducibility_violations

from esrerank_errors import EngineError
from pipelines.retrieve_rerank import EngineReranker, RetrieveRerank
from retrieval.corpus import load_collection
from retrieval.engine_query import EngineQuery
from retrieval.engines import connect

pytestmark = pytest.mark.server

PORT = int(os.environ.get("ESRERANK_RESCORE_PORT", "9290"))
API_KEY = os.environ.get("ESRERANK_RESCORE_API_KEY", "esrerank-ci-key")
NODE_TIMEOUT_S = 10  # esrerank.service.timeout in .ci/servers.sh
NODE_BATCH = 16  # esrerank.service.batch_size there
WINDOW = 20
FIELDS = ["title", "text"]
MAX_LENGTH = 256
INDEXES = {"rescore-1-shard": 1, "rescore-3-shards": 3}


@pytest.fixture(scope="module")
def es_url() -> str:
    url = require_server("elasticsearch")
    import urllib.request

    with urllib.request.urlopen(f"{url}/_cat/plugins?h=component") as response:
        plugins = response.read().decode().split()
    if "esrerank-rescore" not in plugins:
        pytest.fail(f"the esrerank rescorer plugin is not installed in the Elasticsearch at {url} (it has: "
                    f"{plugins}); restart it with: bash .ci/servers.sh stop elasticsearch && bash .ci/servers.sh "
                    "start elasticsearch")
    return url


@pytest.fixture(scope="module")
def client(es_url):
    import elasticsearch

    return elasticsearch.Elasticsearch(es_url, request_timeout=60)


@pytest.fixture(scope="module")
def collection(cranfield):
    return load_collection(str(cranfield), "test")


@pytest.fixture(scope="module")
def indexes(client, collection):
    """Cranfield as a user loads it: their mapping, ``helpers.bulk``, one segment after the load."""
    from elasticsearch import helpers

    mapping = {"properties": {"title": {"type": "text"}, "text": {"type": "text"}}}
    for name, shards in INDEXES.items():
        if client.indices.exists(index=name):
            client.indices.delete(index=name)
        client.indices.create(index=name, mappings=mapping,
                              settings={"number_of_shards": shards, "number_of_replicas": 0})
        actions = [{"_index": name, "_id": d.doc_id, "title": d.title, "text": d.text} for d in collection.documents]
        ok, errors = helpers.bulk(client, actions, chunk_size=500, refresh="wait_for")
        assert not errors and ok == len(actions)
        client.indices.forcemerge(index=name, max_num_segments=1)
        client.indices.refresh(index=name)
    return list(INDEXES)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A 2-layer BERT cross-encoder built here, its weights drawn wide enough that its scores are spread
    (a default init gives scores ~1e-5 apart, where the order of near-ties is noise)."""
    from models_support import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("spread-ce"), seed=7, initializer_range=0.2)


@pytest.fixture(scope="module")
def model(model_dir):
    from rerank.cross_encoder import CrossEncoder

    return CrossEncoder(str(model_dir), max_length=MAX_LENGTH, dtype="float32")


@contextmanager
def serving(model, api_key: str = API_KEY):
    """``esrerank serve``'s service on the port the node calls, taking at most the node's batch a request: a
    window of 20 that the plugin did not split would be refused (422)."""
    from rerank.service import RerankService, ServiceConfig

    running = RerankService(model, port=PORT, max_wait_ms=2, model_name="spread-tiny", api_key=api_key,
                            limits=ServiceConfig(max_docs=NODE_BATCH)).start()
    try:
        yield running
    finally:
        running.close()


@contextmanager
def _fake_service(answer):
    """A service on the node's port answering each request's body (bytes) with ``answer(body)``: (HTTP status,
    JSON-able payload)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            status, payload = answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            body = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the node gave up waiting, as it should

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def stand_in(delay_s: float = 0.0, status: int = 200):
    """A service on the node's port that answers late, or answers an error: what a real one does when its
    machine is overloaded or its model fails, made to happen on demand."""

    def answer(_body):
        time.sleep(delay_s)
        return status, ({"error": "model crashed: CUDA error: device-side assert"} if status != 200
                        else {"results": []})

    with _fake_service(answer):
        yield


@contextmanager
def recording():
    """A service on the node's port that keeps every request it gets and scores a document by its length."""
    received: list[dict] = []

    def answer(body):
        request = json.loads(body)
        received.append(request)
        return 200, {"results": [{"index": i, "relevance_score": float(len(text))}
                                 for i, text in enumerate(request["documents"])]}

    with _fake_service(answer):
        yield received


def _first_stage(es_url, index):
    return connect("elasticsearch", es_url, index, query=EngineQuery(fields=tuple(FIELDS)), rerank_fields=FIELDS)


def _engine_reranker(es_url, index):
    return EngineReranker(connect("elasticsearch", es_url, index, query=EngineQuery(fields=tuple(FIELDS)),
                                  rerank_fields=FIELDS, rescore="esrerank"))


@pytest.mark.parametrize("index", list(INDEXES))
def test_the_engines_top10_equals_the_client_side_reranking_for_every_query(es_url, indexes, collection, model,
                                                                            index):
    """Every Cranfield query (225): the plugin's reranked window is ``RetrieveRerank``'s client-side one, same
    index, window and model, within the reproducibility promise (the service batches its own way: the same
    scores to the bound, the same order but for near-ties); on three shards too, where each shard's window is
    restricted to the index's top k (a rescorer's window is per shard)."""
    queries = collection.queries
    client_side = RetrieveRerank(_first_stage(es_url, index), model, retrieve_k=WINDOW, rerank_k=WINDOW)
    in_engine = RetrieveRerank(_first_stage(es_url, index), _engine_reranker(es_url, index), retrieve_k=WINDOW,
                               rerank_k=WINDOW)
    with serving(model):
        expected = client_side.run(queries, show_progress=False)
        got = in_engine.run(queries, show_progress=False)
    bm25 = _first_stage(es_url, index).search_many([q.text for q in queries], WINDOW)
    # each query's reranked window within the promise: the same scores to the bound, the same order wherever
    # neighbours are further apart than twice it
    assert reproducibility_violations({q: hits[:WINDOW] for q, hits in expected.items()},
                                      {q: hits[:WINDOW] for q, hits in got.items()}) == []
    reordered = 0
    for query, first_stage in zip(queries, bm25):
        ids = [h.doc_id for h in got[query.query_id][:10]]
        reordered += ids != [h.doc_id for h in first_stage[:10]]
    assert reordered > len(queries) // 2  # the cross-encoder, not BM25, decided the order


def _rescore(query: str, **options) -> dict:
    return {"window_size": WINDOW, "esrerank": {"query": query, "fields": FIELDS, **options}}


def _search(client, query: str, **options):
    return client.search(index="rescore-1-shard", query={"multi_match": {"query": query, "fields": FIELDS}},
                         size=10, rescore=_rescore(query, **options))


def _node_is_well(client):
    assert client.cluster.health(index="rescore-1-shard", timeout="5s")["status"] in ("green", "yellow")
    tasks = client.tasks.list(actions="*search*", detailed=True)["nodes"]
    running = [t["description"] for node in tasks.values() for t in node["tasks"].values()
               if "tasks" not in t["action"]]
    assert running == []  # no search left waiting on the service


def _timed_failure(client, query: str) -> tuple[str, float]:
    import elasticsearch

    started = time.monotonic()
    with pytest.raises(elasticsearch.ApiError) as failure:
        _search(client, query)
    return str(failure.value), time.monotonic() - started


def test_faults_give_a_clear_error_or_the_first_stage_order(client, es_url, indexes, collection, model):
    query = collection.queries[0].text
    plain = client.search(index="rescore-1-shard", query={"multi_match": {"query": query, "fields": FIELDS}},
                          size=10)["hits"]["hits"]
    seen = {}

    # stopped: nothing listens on the port
    message, seconds = _timed_failure(client, query)
    assert f"127.0.0.1:{PORT}/v1/rerank" in message and "cannot be reached" in message, message
    seen["stopped"] = seconds
    # ... and asked to, the search keeps BM25's order and scores
    kept = _search(client, query, ignore_failure=True)["hits"]["hits"]
    assert [(h["_id"], h["_score"]) for h in kept] == [(h["_id"], h["_score"]) for h in plain]
    _node_is_well(client)

    # slower than the node's timeout
    with stand_in(delay_s=NODE_TIMEOUT_S + 5):
        message, seconds = _timed_failure(client, query)
    assert "did not answer within 10s" in message, message  # the node's timeout, not the stand-in's answer
    seen["slow"] = seconds
    _node_is_well(client)

    # answering 500: the service's own reason reaches the user
    with stand_in(status=500):
        message, seconds = _timed_failure(client, query)
        kept = _search(client, query, ignore_failure=True)["hits"]["hits"]
    assert "answered HTTP 500" in message and "model crashed" in message, message
    assert [h["_id"] for h in kept] == [h["_id"] for h in plain]
    seen["http-500"] = seconds
    _node_is_well(client)

    # a key the service does not hold: the node's keystore has API_KEY
    with serving(model, api_key="another-key"):
        message, seconds = _timed_failure(client, query)
    assert "refused the API key (HTTP 401)" in message and "esrerank.service.api_key" in message, message
    seen["wrong-key"] = seconds
    _node_is_well(client)

    # and after all that, the right service reranks again
    with serving(model):
        hits = _search(client, query)["hits"]["hits"]
    assert [h["_id"] for h in hits] != [h["_id"] for h in plain] or hits[0]["_score"] != plain[0]["_score"]
    print("fault → seconds until the search returned:", {k: round(v, 2) for k, v in seen.items()})


@pytest.mark.parametrize("option", ["url", "api_key", "timeout", "endpoint"])
def test_a_search_request_cannot_name_where_the_node_connects(client, indexes, option):
    import elasticsearch

    with stand_in():  # were the option obeyed, something listens; the request must not get that far
        with pytest.raises(elasticsearch.BadRequestError) as refused:
            _search(client, "wing", **{option: "http://169.254.169.254/latest/meta-data"})
    assert f"[{option}] cannot be set in a search request" in str(refused.value)
    assert "node settings" in str(refused.value)


def test_requests_the_rescorer_cannot_honour_are_refused_with_the_reason(client, indexes):
    import elasticsearch

    bad = {
        "size above the window": ({"size": WINDOW + 1}, {}, "is larger than window_size"),
        "no fields": ({}, {"fields": []}, "needs [fields]"),
        "unknown option": ({}, {"top_n": 3}, "unknown option [top_n]"),
        "window above the node's limit": ({"window": 5000}, {}, "esrerank.rescore.max_window"),
        "unmapped field": ({}, {"fields": ["abstract"]}, "has no field [abstract]"),
    }
    for name, (search, options, fragment) in bad.items():
        rescore = _rescore("wing", **options)
        rescore["window_size"] = search.get("window", WINDOW)
        with pytest.raises(elasticsearch.BadRequestError) as refused:
            client.search(index="rescore-1-shard", query={"match": {"text": "wing"}}, size=search.get("size", 10),
                          rescore=rescore)
        assert fragment in str(refused.value), (name, str(refused.value))


def test_explain_names_the_cross_encoder_score(client, indexes, model):
    with serving(model):
        hit = client.search(index="rescore-1-shard", query={"match": {"text": "wing"}}, size=3, explain=True,
                            rescore=_rescore("wing"))["hits"]["hits"][0]
    assert "esrerank rescore" in hit["_explanation"]["description"]
    assert hit["_explanation"]["value"] == pytest.approx(hit["_score"], abs=1e-5)


def test_the_engine_route_reports_the_services_failure_at_once(es_url, indexes, collection, caplog):
    """Through esrerank's own engine route (what ``--rescore`` runs): the plugin's error, not a retry loop."""
    reranker = _engine_reranker(es_url, "rescore-1-shard")
    first_stage = _first_stage(es_url, "rescore-1-shard")
    with caplog.at_level(logging.INFO, logger="elastic_transport.transport"):
        with pytest.raises(EngineError, match="cannot be reached"):
            RetrieveRerank(first_stage, reranker, retrieve_k=WINDOW, rerank_k=WINDOW).run(collection.queries[:3],
                                                                                          show_progress=False)
    # elastic_transport logs every request it sends: one _msearch for the first stage, one for the rescoring
    # that failed, and none sent again (esrerank asks again only for shards that failed, not for the service)
    sent = [record.getMessage() for record in caplog.records if record.name == "elastic_transport.transport"]
    msearches = [message for message in sent if "/_msearch" in message]
    assert len(msearches) == 2 and not [m for m in caplog.messages if "asking again" in m], sent


def test_evaluate_rescore_measures_what_the_client_side_measures(es_url, indexes, cranfield, model, model_dir, tmp_path):
    """``esrerank evaluate --rescore esrerank`` (the engine reranks) against ``--model`` (this machine reranks),
    same index (three shards), window and model: the same measures."""
    from pipelines.cli import main

    common = ["evaluate", "--data", str(cranfield), "--retriever", "elasticsearch", "--url", es_url, "--index",
              "rescore-3-shards", "--fields", "title,text", "--rerank-k", str(WINDOW), "-q", "--output-json"]
    with serving(model):
        assert main([*common, str(tmp_path / "engine.json"), "--rescore", "esrerank", "--save-run",
                     str(tmp_path / "engine.run")]) == 0
    assert main([*common, str(tmp_path / "client.json"), "--model", str(model_dir), "--max-length", str(MAX_LENGTH),
                 "--dtype", "float32", "--save-run", str(tmp_path / "client.run")]) == 0
    engine, client_side = (json.loads((tmp_path / name).read_text()) for name in ("engine.json", "client.json"))
    assert engine["first_stage"] == client_side["first_stage"]
    # the same measures for every query but those where the promise lets near-tied documents of different
    # grades swap inside the reranked window (what AP reads too)
    from pipelines.runs import read_trec_run
    from retrieval.corpus import load_beir

    qrels = load_beir(cranfield, "test").qrels
    sensitive = assert_same_measures_but_near_ties(read_trec_run(tmp_path / "client.run"),
                                                   read_trec_run(tmp_path / "engine.run"), qrels,
                                                   ["nDCG@10", "RR@10", "AP"], k=WINDOW)
    assert len(sensitive) < len(qrels) // 4, sensitive  # the comparison covers most queries
    assert engine["reranked"]["nDCG@10"] != engine["first_stage"]["nDCG@10"]


def test_rescore_is_refused_where_it_cannot_work(es_url, indexes, cranfield, capsys):
    from pipelines.cli import main

    base = ["evaluate", "--data", str(cranfield), "--rescore", "esrerank", "-q"]
    assert main([*base, "--retriever", "opensearch", "--index", "x", "--fields", "title"]) == 2
    assert "--rescore" in capsys.readouterr().err
    assert main([*base]) == 2  # the in-memory index has no engine to rerank in
    assert "--retriever elasticsearch --index NAME" in capsys.readouterr().err


def test_the_plugin_sends_the_text_esrerank_reads_from_source(client):
    """The plugin (Java) and the client side (``retrieval/source_fields.py``) join a document's fields into the
    same text, for the shapes users' ``_source`` has: lists, objects, keys holding dots, numbers (Python writes
    ``10000000.0`` and ``1.5e-05`` where Java would write ``1.0E7``), booleans (left out), blanks (a no-break
    space is blank to Python's ``strip``), missing fields; and a text longer than the node's cut."""
    from elasticsearch import helpers

    from retrieval.source_fields import join_fields

    name, fields = "rescore-shapes", ["title", "body", "authors.name", "meta.title", "flag"]
    documents = [
        {"title": "Plain title", "body": "plain body", "flag": True},
        {"title": ["first", "second"], "body": "", "authors": [{"name": "Ada"}, {"name": "Grace"}]},
        {"meta.title": "a key that holds a dot", "body": "\u00a0"},
        {"title": 10000000.0, "body": 1.5e-05, "authors": {"name": 12}},
        {"title": "  spaced  ", "body": ["x", "\u2007", "y"], "meta": {"title": "an object's title"}},
        {"body": "no title here"},
        {"title": "long", "body": "é" * 25_000},  # cut at esrerank.rescore.max_text_chars (20,000) by both
    ]
    if client.indices.exists(index=name):
        client.indices.delete(index=name)
    client.indices.create(index=name, mappings={"properties": {"title": {"type": "text"}, "body": {"type": "text"},
                                                               "flag": {"type": "boolean"}}})
    helpers.bulk(client, [{"_index": name, "_id": str(i), **doc} for i, doc in enumerate(documents)],
                 refresh="wait_for")
    with recording() as received:
        hits = client.search(index=name, query={"match_all": {}}, size=10,
                             rescore={"window_size": 10, "esrerank": {"query": "q", "fields": fields}})["hits"]["hits"]
    sent = [text for body in received for text in body["documents"]]
    expected = [join_fields(doc, fields)[:20_000] for doc in documents]
    assert sorted(sent) == sorted(expected)
    assert {h["_id"]: h["_score"] for h in hits} == {str(i): float(len(text)) for i, text in enumerate(expected)}


def test_a_candidate_the_first_stage_query_does_not_match_is_still_rescored(es_url, indexes, collection, model):
    """The engine route restricts the search to the head's ids; a head from elsewhere (a run file) may hold a
    document the query does not match: it is rescored too, not silently missing."""
    from retrieval.records import Hit

    query = collection.queries[0]
    first_stage = _first_stage(es_url, "rescore-1-shard")
    head = first_stage.search(query.text, 5)
    matched = {h.doc_id for h in first_stage.search(query.text, 1400)}
    stranger = next(d.doc_id for d in collection.documents if d.doc_id not in matched)
    head.append(Hit(stranger, 0.0, 6))
    with serving(model):
        scores = _engine_reranker(es_url, "rescore-1-shard").score_heads([query], [head])[0]
    texts = first_stage.fetch_texts([h.doc_id for h in head])
    expected = model.predict([(query.text, text) for text in texts])
    assert_scores_within_bound(scores, expected)
