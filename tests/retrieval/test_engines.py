"""Elasticsearch and OpenSearch as the first stage, against real servers (no mocks)."""

from __future__ import annotations

import json

import pytest
from engines_support import require_server
from run_agreement import top_k_agreement

from esrerank_errors import EngineError
from retrieval.analysis import english_analyzer, standard_analyzer
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir
from retrieval.engine_admin import IndexConfig
from retrieval.engines import connect
from retrieval.indexing import build_index
from retrieval.records import Document

ENGINES = ["elasticsearch", "opensearch"]


@pytest.fixture(scope="module")
def collections(scifact, vaswani, cranfield):
    return {"scifact": load_beir(scifact, "train"), "vaswani": load_beir(vaswani, "test"),
            "cranfield": load_beir(cranfield, "test")}


def _engine(engine, alias):
    """A searcher for ``alias`` on a server with no leftovers of earlier runs under that name."""
    searcher = connect(engine, require_server(engine), alias)
    for name in searcher.list_indices(f"{alias}*"):
        searcher.rest.request("DELETE", f"/{name}")
    return searcher


@pytest.mark.server
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name,analyzer", [("scifact", "english"), ("vaswani", "english"),
                                           ("cranfield", "english"), ("cranfield", "standard")])
def test_engine_top10_and_scores_match_in_memory(engine, name, analyzer, collections):
    collection = collections[name]
    alias = f"test-parity-{name}-{analyzer}"
    searcher = _engine(engine, alias)
    report = build_index(searcher, collection.documents, alias, f"shared:{name}",
                         IndexConfig(k1=0.9, b=0.4, analyzer=analyzer), batch_docs=500, show_progress=False)
    assert report.count_in_index == len(collection.documents)
    memory = InMemoryBM25(collection.documents, k1=0.9, b=0.4, analyzer=analyzer, length_norm="lucene")
    texts = [q.text for q in collection.queries]
    ids = [q.query_id for q in collection.queries]
    expected = dict(zip(ids, memory.search_many(texts, 10)))
    got = dict(zip(ids, searcher.search_many(texts, 10)))
    agreement = top_k_agreement(expected, got, k=10)
    # the Maven Central builds lack analysis-common, so 'auto' must have chosen esrerank's replica there
    answer = searcher.rest.request  # the server's own word on whether it has the analyzer
    try:
        answer("POST", "/_analyze", body={"analyzer": analyzer, "text": "probe"})
        server_has_it = True
    except EngineError:
        server_has_it = False
    assert report.settings["analysis"] == ("native" if server_has_it else "client")
    assert agreement.same_up_to_ties_share >= 0.99
    assert agreement.max_relative_score_diff <= 1e-3


@pytest.mark.server
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["scifact", "vaswani", "cranfield"])
def test_three_shards_search_with_dfs_and_match_in_memory(engine, name, collections):
    collection = collections[name]
    alias = f"test-shards-{name}"
    searcher = _engine(engine, alias)
    build_index(searcher, collection.documents, alias, f"shared:{name}",
                IndexConfig(k1=0.9, b=0.4, analyzer="english", shards=3), batch_docs=500, show_progress=False)
    memory = InMemoryBM25(collection.documents, k1=0.9, b=0.4, analyzer="english", length_norm="lucene")
    texts = [q.text for q in collection.queries]
    ids = [q.query_id for q in collection.queries]
    expected = dict(zip(ids, memory.search_many(texts, 10)))
    with_dfs = connect(engine, searcher.url, alias)  # dfs decided from the index: 3 shards, so on
    assert with_dfs.dfs and with_dfs.primary_shards(alias) == 3
    agreement = top_k_agreement(expected, dict(zip(ids, with_dfs.search_many(texts, 10))), k=10)
    assert agreement.same_up_to_ties_share >= 0.99
    assert agreement.max_relative_score_diff <= 1e-3
    # without DFS each shard scores with its own statistics: the check above would fail
    per_shard = connect(engine, searcher.url, alias, dfs=False)
    drift = top_k_agreement(expected, dict(zip(ids, per_shard.search_many(texts, 10))), k=10)
    assert drift.max_relative_score_diff > 1e-3


@pytest.mark.server
@pytest.mark.parametrize("name", ["scifact", "vaswani", "cranfield"])
def test_english_and_standard_analyzers_equal_the_servers(name, collections):
    # OpenSearch's distribution has analysis-common, so its built-in analyzers are the oracle.
    searcher = _engine("opensearch", "unused")
    documents = collections[name].documents[:150]
    for analyzer, ours in [("english", english_analyzer), ("standard", standard_analyzer)]:
        for doc in documents:
            assert ours(doc.contents) == searcher.server_analyze(doc.contents, analyzer), (analyzer, doc.doc_id)


@pytest.mark.server
@pytest.mark.parametrize("engine", ENGINES)
def test_rebuild_swaps_alias_and_resume_never_duplicates(engine, collections):
    docs = collections["cranfield"].documents
    alias = "test-rebuild"
    searcher = _engine(engine, alias)
    first = build_index(searcher, docs[:300], alias, "slice-a", batch_docs=100, show_progress=False)
    assert searcher.alias_targets(alias) == [first.index] and searcher.count() == 300

    # An interrupted load: stop after 2 batches of the new corpus, then re-run the same build.
    def interrupted():
        for i, doc in enumerate(docs):
            if i == 250:
                raise KeyboardInterrupt
            yield doc

    with pytest.raises(KeyboardInterrupt):
        build_index(searcher, interrupted(), alias, "full", batch_docs=100, workers=1, checkpoint_every_s=0,
                    show_progress=False)
    assert searcher.alias_targets(alias) == [first.index], "a partial index must not be swapped in"
    second = build_index(searcher, docs, alias, "full", batch_docs=100, show_progress=False)
    assert second.resumed_after == 200 and second.index != first.index
    assert searcher.alias_targets(alias) == [second.index]
    assert searcher.count() == len(docs) == second.count_in_index
    assert not searcher.exists(first.index), "the old index is deleted after the swap"
    found = searcher.fetch_texts([d.doc_id for d in docs])
    assert found == [d.contents for d in docs]


@pytest.mark.server
@pytest.mark.parametrize("engine", ENGINES)
def test_failed_documents_go_to_dead_letter_with_reason(engine, tmp_path):
    alias = "test-dead-letter"
    searcher = _engine(engine, alias)
    docs = [Document("ok1", "", "fine text"), Document("x" * 600, "", "an _id longer than 512 bytes"),
            Document("ok2", "", "more text")]
    report = build_index(searcher, docs, alias, "dead", dead_letter=tmp_path / "dl.jsonl", show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert report.indexed == 2 and report.failed == 1 and searcher.count() == 2
    assert rows[0]["doc_id"] == "x" * 600 and rows[0]["status"] == 400 and "512 bytes" in rows[0]["reason"]
    assert rows[0]["document"]["text"] == "an _id longer than 512 bytes"


@pytest.mark.server
@pytest.mark.parametrize("engine", ENGINES)
def test_documents_the_server_refuses_are_kept_with_the_servers_reason(engine, tmp_path):
    from retrieval.indexing import Backoff, DeadLetters, send_bulk

    searcher = _engine(engine, "test-refused")
    if not searcher.exists("test-refused"):
        searcher.rest.request("PUT", "/test-refused")
    searcher.rest.request("PUT", "/test-refused/_settings", body={"index": {"blocks": {"write": True}}})
    letters = DeadLetters(tmp_path / "dl.jsonl")
    docs = [Document("a", "t", "one"), Document("b", "", "two")]
    indexed, failed, retried = send_bulk(searcher, "test-refused", docs, IndexConfig(analysis="native"),
                                         Backoff(max_retries=1, initial_s=0.01), letters)
    rows = [json.loads(line) for line in (tmp_path / "dl.jsonl").read_text().splitlines()]
    assert (indexed, failed, retried) == (0, 2, 0)
    assert [r["doc_id"] for r in rows] == ["a", "b"] and all(r["status"] == 403 for r in rows)
    assert "cluster_block_exception" in rows[0]["reason"] and rows[0]["document"] == {"title": "t", "text": "one"}


@pytest.mark.server
def test_alias_name_taken_by_a_plain_index_is_refused():
    searcher = _engine("elasticsearch", "test-plain")
    if not searcher.exists("test-plain"):
        searcher.rest.request("PUT", "/test-plain")
    with pytest.raises(EngineError, match="is an index, not an alias"):
        build_index(searcher, [Document("1", "", "x")], "test-plain", "c", show_progress=False)
