"""Reranking inside a live OpenSearch (2.19.1 with ML Commons and neural-search, started by
`bash .ci/servers.sh start opensearch-ml`): the engine calls a real `esrerank serve` on loopback."""

from __future__ import annotations

import time

import numpy as np
import pytest
from engines_support import free_port, require_server
from run_agreement import (
    assert_same_measures_but_near_ties,
    measure_sensitive_near_ties,
    reproducibility_violations,
)

from esrerank_errors import EngineError, RegistrationError
from pipelines.engine_rerank import register_opensearch
from pipelines.evaluation import mean_scores, per_query_scores
from pipelines.retrieve_rerank import EngineReranker, RerankConfig, first_stage_run, rerank_run
from rerank.cross_encoder import CrossEncoder
from rerank.service import RerankService
from retrieval.corpus import load_collection
from retrieval.engine_admin import IndexConfig
from retrieval.engine_rest import rest_client
from retrieval.engines import OpenSearchBM25
from retrieval.indexing import build_index

INDEX = "esrerank-test-engine-rerank"
API_KEY = "test-key-5f1d"
WINDOW = 20


@pytest.fixture(scope="module")
def engine_url() -> str:
    return require_server("opensearch-ml")


@pytest.fixture(scope="module")
def vaswani_collection(vaswani):
    return load_collection(vaswani, "test")


@pytest.fixture(scope="module")
def vaswani_index(engine_url, vaswani_collection) -> str:
    """Vaswani (no titles: the engine sends `text`, the client side reranks title + text) on the ML server."""
    searcher = OpenSearchBM25(engine_url, INDEX)
    if not searcher.exists(INDEX) or searcher.count() != len(vaswani_collection.documents):
        build_index(searcher, iter(vaswani_collection.documents), INDEX, "vaswani-test", IndexConfig(),
                    show_progress=False)
    return INDEX


@pytest.fixture(scope="module")
def model(spread_cross_encoder):
    # spread scores: the orders compared below are the model's, not float noise
    return CrossEncoder(str(spread_cross_encoder), max_length=128, dtype="float32")


@pytest.fixture(scope="module")
def service(model):
    running = RerankService(model, port=0, api_key=API_KEY, model_name="tiny").start()
    yield running
    running.close()


@pytest.fixture(scope="module")
def registration(engine_url, service):
    return register_opensearch(rest_client("opensearch", engine_url), service.url, name="esrerank-test", api_key=API_KEY)


def test_register_creates_once_and_a_rerun_changes_nothing(engine_url, service, registration):
    again = register_opensearch(rest_client("opensearch", engine_url), service.url, name="esrerank-test", api_key=API_KEY)
    assert (again.connector_id, again.model_id, again.pipeline) == (registration.connector_id, registration.model_id,
                                                                    "esrerank-test")
    assert again.created == ()


def test_engine_reranked_top10_equals_client_side_for_every_query(engine_url, vaswani_index, vaswani_collection,
                                                                  model, registration, capsys):
    queries = vaswani_collection.queries
    bm25 = OpenSearchBM25(engine_url, vaswani_index)
    first_stage = first_stage_run(bm25, queries, 100)
    window = RerankConfig(rerank_k=WINDOW)
    client = rerank_run(queries, first_stage, model, bm25.fetch_texts, window)
    in_engine = rerank_run(queries, first_stage, EngineReranker(OpenSearchBM25(engine_url, vaswani_index,
                                                                               search_pipeline=registration.pipeline)),
                           bm25.fetch_texts, window)
    assert len(queries) == 93
    # the service scores in its own batches: the reranked windows keep the reproducibility promise, and with no
    # near-ties of different grades in a top 10, the same nDCG@10
    heads = {q.query_id: client[q.query_id][:WINDOW] for q in queries}
    assert reproducibility_violations(heads, {q.query_id: in_engine[q.query_id][:WINDOW] for q in queries}) == []
    sensitive = assert_same_measures_but_near_ties(client, in_engine, vaswani_collection.qrels, ["nDCG@10"])
    assert len(sensitive) < len(queries) // 10, sensitive  # the comparison covers most queries
    client_ndcg = mean_scores(per_query_scores(client, vaswani_collection.qrels))["nDCG@10"]
    engine_ndcg = mean_scores(per_query_scores(in_engine, vaswani_collection.qrels))["nDCG@10"]
    with capsys.disabled():  # shown in CI's log
        print(f"\nvaswani nDCG@10, window {WINDOW}: client-side {client_ndcg:.4f}, inside OpenSearch {engine_ndcg:.4f}")
    assert engine_ndcg == pytest.approx(client_ndcg, abs=1e-12)


def test_long_score_numbers_are_what_the_engine_cannot_read(engine_url, vaswani_index, registration, monkeypatch):
    # The service's score formatting is what makes the engine read the scores: with Python's own float
    # repr (19-20 characters for most float32 logits) ML Commons' Cohere post-processing fails.
    searcher = OpenSearchBM25(engine_url, vaswani_index, search_pipeline=registration.pipeline)
    assert len(searcher.search("measurement of dielectric constant", 5)) == 5
    monkeypatch.setattr("rerank.rerank_api.json_score", float)
    with pytest.raises(EngineError) as refused:  # 2.19.1 says "Fail to execute PREDICT in aws connector"
        searcher.search("measurement of dielectric constant", 5)
    assert refused.value.status == 500


@pytest.mark.parametrize("key", ["wrong-key", None], ids=["wrong key", "no key"])
def test_the_service_refuses_the_engine_without_the_right_key(engine_url, vaswani_index, service, key):
    registered = register_opensearch(rest_client("opensearch", engine_url), service.url,
                                     name=f"esrerank-test-key-{'none' if key is None else 'wrong'}", api_key=key)
    searcher = OpenSearchBM25(engine_url, vaswani_index, search_pipeline=registered.pipeline)
    with pytest.raises(EngineError, match="401"):
        searcher.search("measurement of dielectric constant", 5)


class _SlowModel:
    def __init__(self, seconds: float):
        self.seconds = seconds

    def predict(self, pairs, rankings=None):
        time.sleep(self.seconds)
        return np.zeros(len(pairs), dtype=np.float32)


class _BrokenModel:
    def predict(self, pairs, rankings=None):
        raise RuntimeError("CUDA out of memory (simulated)")



def _search_seconds(searcher, query="measurement of dielectric constant"):
    started = time.perf_counter()
    try:
        searcher.search(query, 5)
    except EngineError as error:
        return time.perf_counter() - started, error
    return time.perf_counter() - started, None


def test_service_stopped_slow_or_failing_gives_a_clear_error_never_a_hang(engine_url, vaswani_index, capsys):
    rest = rest_client("opensearch", engine_url)
    outcomes = {}
    stopped = register_opensearch(rest, f"http://127.0.0.1:{free_port()}", name="esrerank-test-stopped", timeout_s=2)
    outcomes["stopped"] = _search_seconds(OpenSearchBM25(engine_url, vaswani_index, search_pipeline=stopped.pipeline))
    for name, model in (("slow", _SlowModel(8.0)), ("5xx", _BrokenModel())):
        running = RerankService(model, port=0, max_wait_ms=0).start()
        try:
            registered = register_opensearch(rest, running.url, name=f"esrerank-test-{name}", timeout_s=2)
            outcomes[name] = _search_seconds(OpenSearchBM25(engine_url, vaswani_index,
                                                            search_pipeline=registered.pipeline))
        finally:
            running.close()
    for name, (seconds, error) in outcomes.items():
        with capsys.disabled():
            print(f"\nservice {name}: the engine answered in {seconds:.2f} s: {error}")
        # slow: the service would answer after 8 s with scores; an error means the connector's 2 s timeout
        assert error is not None, name
    assert "500" in str(outcomes["5xx"][1]) and "out of memory" in str(outcomes["5xx"][1])


def test_fallback_to_bm25_when_asked(engine_url, vaswani_index):
    running = RerankService(_BrokenModel(), port=0, max_wait_ms=0).start()
    try:
        registered = register_opensearch(rest_client("opensearch", engine_url), running.url,
                                          name="esrerank-test-fallback", timeout_s=2, ignore_failure=True)
        searcher = OpenSearchBM25(engine_url, vaswani_index, search_pipeline=registered.pipeline)
        hits = searcher.search("measurement of dielectric constant", 10)
    finally:
        running.close()
    bm25 = OpenSearchBM25(engine_url, vaswani_index).search("measurement of dielectric constant", 10)
    assert [h.doc_id for h in hits] == [h.doc_id for h in bm25]


def test_engine_without_the_ml_plugin_is_named_in_one_line():
    url = require_server("opensearch")  # OpenSearch 3.6.0 from the BM25 tests: no ML Commons
    with pytest.raises(RegistrationError, match="ML Commons plugin"):
        register_opensearch(rest_client("opensearch", url), "http://127.0.0.1:8080", name="esrerank-test-noml")


def test_untrusted_service_url_names_the_setting(engine_url):
    with pytest.raises(RegistrationError, match="trusted_connector_endpoints_regex"):
        register_opensearch(rest_client("opensearch", engine_url), "http://192.0.2.1:8080", name="esrerank-test-untrusted")


def test_cli_register_prints_one_json_line_and_errors_in_one_line(engine_url, service, capsys, monkeypatch):
    import json

    from pipelines.cli import main

    monkeypatch.setenv("ESRERANK_API_KEY", API_KEY)
    assert main(["register", "opensearch", "--url", engine_url, "--service-url", service.url,
                 "--name", "esrerank-test-cli", "-q"]) == 0
    first = json.loads(capsys.readouterr().out.strip())
    assert main(["register", "opensearch", "--url", engine_url, "--service-url", service.url,
                 "--name", "esrerank-test-cli", "-q"]) == 0
    second = json.loads(capsys.readouterr().out.strip())
    assert second["created"] == [] and second["model_id"] == first["model_id"]
    no_ml = require_server("opensearch")
    assert main(["register", "opensearch", "--url", no_ml, "--service-url", service.url, "-q"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("esrerank: error: looking for existing connectors: the ML Commons plugin (opensearch-ml) "
                            "is not installed") and "\n" not in error


def test_cli_evaluate_and_search_through_the_pipeline_equal_client_side(engine_url, vaswani, vaswani_index,
                                                                       spread_cross_encoder, vaswani_collection,
                                                                       registration, tmp_path, capsys):
    import json

    from pipelines.cli import main
    from pipelines.runs import read_trec_run

    common = ["--data", str(vaswani), "--retriever", "opensearch", "--url", engine_url, "--index", vaswani_index,
              "--retrieve-k", "100", "--rerank-k", "10", "-q"]
    assert main(["evaluate", *common, "--search-pipeline", registration.pipeline,
                 "--output-json", str(tmp_path / "engine.json")]) == 0
    assert main(["evaluate", *common, "--model", str(spread_cross_encoder), "--max-length", "128", "--dtype",
                 "float32", "--output-json", str(tmp_path / "client.json"), "--save-run", str(tmp_path / "client.run")]) == 0
    engine, client = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("engine", "client"))
    # the same measures: the promise keeps every order but that of near-ties, and none changes a measure here
    assert measure_sensitive_near_ties(read_trec_run(tmp_path / "client.run"), vaswani_collection.qrels) == []
    assert engine == client
    capsys.readouterr()
    assert main(["search", "dielectric constant of liquids", "--retriever", "opensearch", "--url", engine_url,
                 "--index", vaswani_index, "--search-pipeline", registration.pipeline, "-k", "5", "--rerank-k", "10",
                 "-q"]) == 0
    engine_lines = capsys.readouterr().out.splitlines()
    assert main(["search", "dielectric constant of liquids", "--retriever", "opensearch", "--url", engine_url,
                 "--index", vaswani_index, "--model", str(spread_cross_encoder), "--max-length", "128", "--dtype",
                 "float32", "-k", "5", "--rerank-k", "10", "-q"]) == 0
    client_lines = capsys.readouterr().out.splitlines()
    assert len(engine_lines) == 6 and engine_lines[0] == client_lines[0]
    # each hit line: rank, score (4 decimals), id, text; the score within the bound and its rounding
    engine_hits, client_hits = ([line.split(maxsplit=2) for line in lines[1:]] for lines in (engine_lines, client_lines))
    client_scores = [float(score) for _, score, _ in client_hits]
    assert all(a - b > 2e-4 * max(1.0, abs(a)) + 1e-4 for a, b in zip(client_scores, client_scores[1:]))  # no near-ties
    assert [(rank, rest) for rank, _, rest in engine_hits] == [(rank, rest) for rank, _, rest in client_hits]
    assert all(abs(float(e[1]) - c) <= 1e-4 * max(1.0, abs(c)) + 1e-4 for e, c in zip(engine_hits, client_scores))
    assert main(["evaluate", "--data", str(vaswani), "--search-pipeline", registration.pipeline, "-q"]) == 2
    assert "needs --retriever opensearch" in capsys.readouterr().err
