"""Reranking the search a user already runs: indexes built the way users build them (plain ``_bulk`` with the
engines' own Python clients, their own field names and mappings), searched with their fields or their own
query, against real Elasticsearch and OpenSearch servers. The oracle is always the engine's own answer to
the same request sent directly with the real client SDK."""

from __future__ import annotations

import json

import ir_measures
import pytest
from engines_support import require_server

from esrerank_errors import DataError
from pipelines.cli import main
from pipelines.retrieve_rerank import RerankConfig, RetrieveRerank, first_stage_run, rerank_run
from retrieval.corpus import load_beir
from retrieval.engine_query import EngineQuery, read_query_template
from retrieval.engines import connect

ENGINES = ["elasticsearch", "opensearch"]
QUERIES = 60  # SciFact training queries searched per test: enough to be a run, quick on 2 cores

# A hand-written mapping as a user writes one: other field names, a multi-field, a nested field, an object
# path, a number to filter on, and ids in a keyword field of their own (the _ids are the engine's own scheme).
HAND_MAPPING = {
    "properties": {
        "headline": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}},
        "body": {"type": "text"},
        "doc_key": {"type": "keyword"},
        "year": {"type": "integer"},
        "authors": {"type": "nested", "properties": {"name": {"type": "text"}}},
        "meta": {"properties": {"journal": {"type": "text"}}},
    }
}


def year_of(number: int) -> int:
    return 2000 + number % 20


def _client(engine: str, url: str):
    if engine == "elasticsearch":
        import elasticsearch
        from elasticsearch import helpers

        return elasticsearch.Elasticsearch(url, request_timeout=60), helpers
    import opensearchpy
    from opensearchpy import helpers

    return opensearchpy.OpenSearch(url, timeout=60), helpers


def _bulk_index(client, helpers, name: str, actions, mapping=None, settings=None):
    if client.indices.exists(index=name):
        client.indices.delete(index=name)
    body = {key: value for key, value in (("mappings", mapping), ("settings", settings)) if value is not None}
    if type(client).__module__.startswith("elasticsearch"):
        client.indices.create(index=name, **body)
    else:
        client.indices.create(index=name, body=body)
    ok, errors = helpers.bulk(client, actions, chunk_size=500, refresh="wait_for")
    assert not errors and ok == len(actions)
    # one segment, as a user does after a load: equal scores then keep one order (insertion) in every search,
    # where a background merge could otherwise reorder ties between two searches
    client.indices.forcemerge(index=name, max_num_segments=1)
    client.indices.refresh(index=name)


@pytest.fixture(scope="module")
def scifact_collection(scifact):
    return load_beir(scifact, "train")


@pytest.fixture(scope="module", params=ENGINES)
def user_indexes(request, scifact_collection):
    """Two indexes of SciFact on one engine, built with the engine's own client and plain _bulk:
    ``user-dynamic`` (dynamic mapping, fields headline/body, _id = the corpus id) and ``user-hand`` (the
    hand-written mapping above, _id = "a<n>", the corpus id in doc_key)."""
    engine = request.param
    url = require_server(engine)
    client, helpers = _client(engine, url)
    docs = scifact_collection.documents
    dynamic = [{"_index": "user-dynamic", "_id": d.doc_id, "_source": {"headline": d.title, "body": d.text}}
               for d in docs]
    _bulk_index(client, helpers, "user-dynamic", dynamic)
    hand = [{"_index": "user-hand", "_id": f"a{n}",
             "_source": {"headline": d.title, "body": d.text, "doc_key": d.doc_id, "year": year_of(n),
                         "authors": [{"name": f"author {n % 7}"}, {"name": f"coauthor {n % 5}"}],
                         "meta": {"journal": f"journal {n % 3}"}}}
            for n, d in enumerate(docs)]
    _bulk_index(client, helpers, "user-hand", hand, mapping=HAND_MAPPING)
    yield engine, url, client
    client.close()


def _search(client, index: str, body: dict) -> list[dict]:
    if type(client).__module__.startswith("elasticsearch"):
        return client.search(index=index, **body)["hits"]["hits"]
    return client.search(index=index, body=body)["hits"]["hits"]


def _direct_run(client, index: str, bodies: dict[str, dict], id_field: str | None = None):
    """The engine's own answer, asked with the real client SDK one query at a time: {qid: [(id, score)]}."""
    run = {}
    for qid, body in bodies.items():
        run[qid] = [(h["_source"][id_field] if id_field else h["_id"], h["_score"])
                    for h in _search(client, index, body)]
    return run


def _as_pairs(run):
    return {qid: [(h.doc_id, h.score) for h in hits] for qid, hits in run.items()}


@pytest.mark.server
def test_fields_query_equals_the_engines_own_answer_for_every_query(user_indexes, scifact_collection):
    engine, url, client = user_indexes
    queries = scifact_collection.queries[:QUERIES]
    query = EngineQuery(fields=("headline^2", "body"))
    searcher = connect(engine, url, "user-dynamic", query=query)
    ours = _as_pairs(first_stage_run(searcher, queries, 100))
    direct = _direct_run(client, "user-dynamic", {
        q.query_id: {"query": {"multi_match": {"query": q.text, "fields": ["headline^2", "body"]}}, "size": 100}
        for q in queries})
    assert ours == direct  # same ids, same order, same scores, every query
    assert sum(len(hits) for hits in ours.values()) == 100 * len(queries)
    # the reranker reads the fields searched, boosts dropped, in order
    assert searcher.reranked_fields() == ["headline", "body"]
    doc = scifact_collection.documents[0]
    assert searcher.fetch_texts([doc.doc_id]) == [doc.contents]


@pytest.mark.server
def test_template_with_a_filter_and_an_id_field_equals_the_engines_answer(user_indexes, scifact_collection, tmp_path):
    engine, url, client = user_indexes
    template = {"query": {"bool": {
        "must": {"multi_match": {"query": "{{query}}", "fields": ["headline.raw^3", "headline^2", "body"],
                                 "type": "most_fields"}},
        "filter": [{"range": {"year": {"gte": 2005, "lt": 2015}}}],
        "should": [{"nested": {"path": "authors", "query": {"match": {"authors.name": "{{query}}"}}}}]}}}
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template))
    queries = scifact_collection.queries[:QUERIES]
    searcher = connect(engine, url, "user-hand", query=read_query_template(path), id_field="doc_key")
    ours = _as_pairs(first_stage_run(searcher, queries, 50))
    bodies = {q.query_id: {"query": {"bool": {
        "must": {"multi_match": {"query": q.text, "fields": ["headline.raw^3", "headline^2", "body"],
                                 "type": "most_fields"}},
        "filter": [{"range": {"year": {"gte": 2005, "lt": 2015}}}],
        "should": [{"nested": {"path": "authors", "query": {"match": {"authors.name": q.text}}}}]}}, "size": 50}
        for q in queries}
    assert ours == _direct_run(client, "user-hand", bodies, id_field="doc_key")
    # every hit passes the filter: its year, read back by the corpus id
    years = {d.doc_id: year_of(n) for n, d in enumerate(scifact_collection.documents)}
    assert all(2005 <= years[doc] < 2015 for hits in ours.values() for doc, _ in hits)
    # a template's reranked fields default to the mapping's text fields, title-like first
    assert searcher.reranked_fields() == ["headline", "authors.name", "body", "meta.journal"]


@pytest.mark.server
def test_stored_search_template_equals_the_engines_answer(user_indexes, scifact_collection):
    engine, url, client = user_indexes
    source = '{"query": {"match": {"body": "{{query}}"}}, "size": "{{size}}"}'
    elastic = engine == "elasticsearch"
    modules = {m["name"] for node in client.nodes.info(metric="plugins")["nodes"].values() for m in node["modules"]}
    if "lang-mustache" not in modules:
        # Elasticsearch's distribution on Maven Central has no lang-mustache module (nor is the module there):
        # no search template can be stored or rendered, and esrerank must say so in one line
        searcher = connect(engine, url, "user-dynamic", query=EngineQuery(template_id="user-body-search"))
        with pytest.raises(DataError, match="'user-body-search' is neither a file nor a search template elasticsearch "
                                            "can render"):
            searcher.check()
        return
    script = {"lang": "mustache", "source": source}
    client.put_script(id="user-body-search", script=script) if elastic else \
        client.put_script(id="user-body-search", body={"script": script})
    queries = scifact_collection.queries[:QUERIES]
    searcher = connect(engine, url, "user-dynamic", query=EngineQuery(template_id="user-body-search"),
                       rerank_fields=["body"])
    ours = _as_pairs(first_stage_run(searcher, queries, 30))
    direct = {}
    for q in queries:
        params = {"query": q.text, "size": 30}
        answer = (client.search_template(index="user-dynamic", id="user-body-search", params=params) if elastic else
                  client.search_template(index="user-dynamic", body={"id": "user-body-search", "params": params}))
        direct[q.query_id] = [(h["_id"], h["_score"]) for h in answer["hits"]["hits"]]
    assert ours == direct and all(len(hits) == 30 for hits in ours.values())


@pytest.mark.server
def test_reranked_top10_equals_the_in_memory_reranker_on_the_same_texts(user_indexes, scifact_collection,
                                                                         tiny_cross_encoder):
    from rerank.cross_encoder import CrossEncoder

    engine, url, _ = user_indexes
    queries = scifact_collection.queries[:20]
    reranker = CrossEncoder(str(tiny_cross_encoder), max_length=128, dtype="float32")
    searcher = connect(engine, url, "user-hand", query=EngineQuery(fields=("headline", "body")), id_field="doc_key",
                       rerank_fields=["headline", "body"])
    ours = RetrieveRerank(searcher, reranker, retrieve_k=30, rerank_k=30).run(queries)
    first_stage = first_stage_run(searcher, queries, 30)
    in_memory = rerank_run(queries, first_stage, reranker, scifact_collection.texts(), RerankConfig(rerank_k=30))
    for q in queries:
        assert [h.doc_id for h in ours[q.query_id][:10]] == [h.doc_id for h in in_memory[q.query_id][:10]]
        assert [h.score for h in ours[q.query_id][:10]] == pytest.approx([h.score for h in in_memory[q.query_id][:10]],
                                                                         abs=1e-5)


@pytest.mark.server
def test_nested_and_dotted_fields_are_read_in_the_order_named(user_indexes, scifact_collection):
    engine, url, _ = user_indexes
    searcher = connect(engine, url, "user-hand", query=EngineQuery(fields=("body",)), id_field="doc_key",
                       rerank_fields=["meta.journal", "authors.name", "headline"])
    doc = scifact_collection.documents[3]
    assert searcher.fetch_texts([doc.doc_id]) == [f"journal 0 author 3 coauthor 3 {doc.title}"]


@pytest.mark.server
def test_evaluate_without_a_model_gives_the_ndcg_of_the_direct_run(user_indexes, scifact, scifact_collection,
                                                                   tmp_path):
    engine, url, client = user_indexes
    queries = scifact_collection.queries[:QUERIES]
    ids = tmp_path / "ids.json"
    ids.write_text(json.dumps([q.query_id for q in queries]))
    out = tmp_path / "measures.json"
    assert main(["evaluate", "--data", str(scifact), "--split", "train", "--query-ids", str(ids), "--retriever",
                 engine, "--url", url, "--index", "user-hand", "--fields", "headline^2,body", "--id-field", "doc_key",
                 "--model", "none", "--retrieve-k", "100", "--output-json", str(out), "-q"]) == 0
    direct = _direct_run(client, "user-hand", {
        q.query_id: {"query": {"multi_match": {"query": q.text, "fields": ["headline^2", "body"]}}, "size": 100}
        for q in queries}, id_field="doc_key")
    run = {qid: {doc: score for doc, score in hits} for qid, hits in direct.items()}
    qrels = {q.query_id: scifact_collection.qrels[q.query_id] for q in queries}
    ndcg = ir_measures.nDCG @ 10
    expected = ir_measures.calc_aggregate([ndcg], qrels, run)[ndcg]
    assert json.loads(out.read_text())["first_stage"]["nDCG@10"] == pytest.approx(expected, abs=1e-9)
    assert expected > 0.3  # the run is a real one, not an empty or a random ranking


@pytest.mark.server
def test_source_disabled_reads_stored_fields_or_says_why_not(user_indexes, scifact_collection):
    engine, url, client = user_indexes
    _, helpers = _client(engine, url)
    docs = scifact_collection.documents[:50]
    stored = {"_source": {"enabled": False}, "properties": {"title": {"type": "text", "store": True},
                                                             "abstract": {"type": "text", "store": True},
                                                             "notes": {"type": "text"}}}
    _bulk_index(client, helpers, "user-stored", [{"_index": "user-stored", "_id": d.doc_id,
                                                  "_source": {"title": d.title, "abstract": d.text, "notes": "x"}}
                                                 for d in docs], mapping=stored)
    searcher = connect(engine, url, "user-stored", query=EngineQuery(fields=("title", "abstract")))
    assert searcher.fetch_texts([docs[1].doc_id]) == [docs[1].contents]
    unstored = connect(engine, url, "user-stored", query=EngineQuery(fields=("notes",)))
    with pytest.raises(DataError, match="_source disabled and notes not stored"):
        unstored.check()


def _cli_error(capsys, argv):
    code = main(argv + ["-q"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return code, lines[0]


@pytest.mark.server
def test_each_mistake_is_one_line_naming_what_the_index_has(user_indexes, scifact, tmp_path, capsys):
    engine, url, _ = user_indexes
    base = ["evaluate", "--data", str(scifact), "--split", "train", "--retriever", engine, "--url", url,
            "--model", "none"]
    no_placeholder = tmp_path / "fixed.json"
    no_placeholder.write_text('{"query": {"match": {"body": "always the same"}}}')
    rejected = tmp_path / "rejected.json"
    rejected.write_text('{"query": {"no_such_query": {"body": "{{query}}"}}}')
    empty = tmp_path / "empty.json"
    empty.write_text('{"query": {"bool": {"must": {"match": {"body": "{{query}}"}}, '
                     '"filter": {"range": {"year": {"gt": 3000}}}}}}')
    malformed = tmp_path / "malformed.json"
    malformed.write_text('{"query":\n  {"match": {"body": "{{query}}"}}\n')
    cases = [
        (["--index", "user-dynamic"], "was not built by 'esrerank index'", "headline, body"),
        (["--index", "user-dynamic", "--fields", "title,body"], "has no field 'title'", "headline, body"),
        (["--index", "user-dynamic", "--fields", "body", "--rerank-fields", "abstract"], "has no field 'abstract'",
         "headline, body"),
        (["--index", "user-hand", "--query-template", str(no_placeholder)], "no {{query}} placeholder", "fixed.json"),
        (["--index", "user-hand", "--query-template", str(malformed)], "malformed.json:3: not JSON", ""),
        (["--index", "user-hand", "--query-template", str(rejected)], "rejects the query", "no_such_query"),
        (["--index", "user-hand", "--query-template", "no-such-template"], "neither a file nor a search template",
         ""),
        (["--index", "user-hand", "--query-template", str(empty), "--id-field", "doc_key"],
         "none of the 809 queries found a document", "body"),
        (["--index", "user-hand", "--fields", "body"], "relevant documents the qrels name is in index 'user-hand'",
         "index's ids like 'a"),
        (["--index", "user-hand", "--fields", "body", "--id-field", "body"], "looked up by their id", ""),
        (["--index", "no-such-index", "--fields", "body"], "has no index or alias 'no-such-index'", ""),
    ]
    for extra, fragment, names in cases:
        code, line = _cli_error(capsys, base + extra)
        assert code == 2, (extra, line)
        assert line.startswith("esrerank: error:") and fragment in line and names in line, (extra, line)


@pytest.mark.server
def test_engine_flags_without_an_engine_are_refused(scifact, capsys):
    code, line = _cli_error(capsys, ["evaluate", "--data", str(scifact), "--split", "train", "--model", "none",
                                     "--fields", "body"])
    assert code == 2 and "--fields is for an engine index" in line


@pytest.mark.server
def test_mine_on_a_user_index_equals_mine_on_an_esrerank_index(user_indexes, scifact, scifact_collection, tmp_path):
    import datasets

    from pipelines.mining import MiningConfig, mine_collection
    from retrieval.engine_admin import IndexConfig
    from retrieval.indexing import build_index

    engine, url, client = user_indexes
    _, helpers = _client(engine, url)
    docs = scifact_collection.documents
    # esrerank's index: the standard analyzer, BM25 k1 0.9 b 0.4, title and text joined in one field
    ours = connect(engine, url, "mine-esrerank")
    for name in ours.list_indices("mine-esrerank*"):
        ours.delete_index(name)
    build_index(ours, docs, "mine-esrerank", "shared:scifact", IndexConfig(k1=0.9, b=0.4, analyzer="standard"),
                batch_docs=500, workers=1, show_progress=False)
    # the user's: the same documents and similarity, with their own names and a plain _bulk
    similarity = {"similarity": {"user_bm25": {"type": "BM25", "k1": 0.9, "b": 0.4}}, "number_of_shards": 1}
    mapping = {"properties": {"all_text": {"type": "text", "analyzer": "standard", "similarity": "user_bm25"},
                              "title": {"type": "text"}, "text": {"type": "text"}}}
    _bulk_index(client, helpers, "mine-user", [{"_index": "mine-user", "_id": d.doc_id,
                                                "_source": {"all_text": d.contents, "title": d.title, "text": d.text}}
                                               for d in docs], mapping=mapping, settings=similarity)
    collection = load_beir(scifact, "train")
    collection.queries = collection.queries[:80]
    config = MiningConfig(retrieve_k=30, range_max=30)
    mine_collection(collection, connect(engine, url, "mine-esrerank"), tmp_path / "a", config, dev_queries=10)
    user = connect(engine, url, "mine-user", query=EngineQuery(fields=("all_text",)), rerank_fields=["title", "text"])
    mine_collection(collection, user, tmp_path / "b", config, dev_queries=10)
    a, b = datasets.load_from_disk(str(tmp_path / "a")), datasets.load_from_disk(str(tmp_path / "b"))
    assert len(a) >= 60 and a.to_list() == b.to_list()
    assert (tmp_path / "a" / "dev_samples.jsonl").read_text() == (tmp_path / "b" / "dev_samples.jsonl").read_text()


@pytest.mark.server
def test_mine_under_a_filtered_template_keeps_every_negative_inside_the_filter(user_indexes, scifact,
                                                                               scifact_collection, tmp_path):
    import datasets

    from pipelines.mining import MiningConfig, mine_collection

    engine, url, _ = user_indexes
    template = tmp_path / "filtered.json"
    template.write_text(json.dumps({"bool": {"must": {"match": {"body": "{{query}}"}},
                                             "filter": {"range": {"year": {"gte": 2010}}}}}))
    collection = load_beir(scifact, "train")
    collection.queries = collection.queries[:80]
    searcher = connect(engine, url, "user-hand", query=read_query_template(template), id_field="doc_key",
                       rerank_fields=["headline", "body"])
    report = mine_collection(collection, searcher, tmp_path / "mined", MiningConfig(retrieve_k=30, range_max=30),
                             dev_queries=0)
    rows = datasets.load_from_disk(str(tmp_path / "mined")).to_list()
    assert rows and report.summary["kept"] == len(rows)
    year_by_text = {d.contents: year_of(n) for n, d in enumerate(scifact_collection.documents)}
    negatives = [doc for row in rows for doc, label in zip(row["docs"], row["labels"]) if label == 0]
    assert len(negatives) >= len(rows) * 3  # hard ones from the window, easy ones from what the query reached
    assert all(year_by_text[doc] >= 2010 for doc in negatives)


@pytest.mark.server
def test_documents_without_text_are_reported_and_none_with_text_is_an_error(user_indexes, caplog):
    import logging

    engine, url, client = user_indexes
    _, helpers = _client(engine, url)
    mapping = {"properties": {"headline": {"type": "text"}, "body": {"type": "text"}, "extra": {"type": "text"}}}
    _bulk_index(client, helpers, "user-partial", [
        {"_index": "user-partial", "_id": "1", "_source": {"headline": "a title", "body": "a body"}},
        {"_index": "user-partial", "_id": "2", "_source": {"headline": "only a title"}},
        {"_index": "user-partial", "_id": "3", "_source": {"body": "   "}}], mapping=mapping)
    searcher = connect(engine, url, "user-partial", query=EngineQuery(fields=("headline", "body")),
                       rerank_fields=["body"])
    with caplog.at_level(logging.WARNING):
        assert searcher.fetch_texts(["1", "2", "3"]) == ["a body", "", ""]
    assert "2 of 3 documents of user-partial have no text in body (e.g. 2, 3)" in caplog.text
    empty = connect(engine, url, "user-partial", query=EngineQuery(fields=("headline",)), rerank_fields=["extra"])
    with pytest.raises(DataError, match="none of 3 documents of 'user-partial' has text in extra; its text fields: "
                                        "headline, body, extra"):
        empty.fetch_texts(["1", "2", "3"])


@pytest.mark.server
# Elasticsearch only: OpenSearch's knn needs the k-NN plugin, which its BM25 test node does not have
@pytest.mark.parametrize("user_indexes", ["elasticsearch"], indirect=True)
def test_hybrid_template_with_a_knn_part_equals_the_engines_answer(user_indexes, tmp_path):
    engine, url, client = user_indexes
    _, helpers = _client(engine, url)
    mapping = {"properties": {"body": {"type": "text"},
                              "vec": {"type": "dense_vector", "dims": 3, "index": True, "similarity": "cosine"}}}
    words = ["cell", "protein", "cancer", "brain", "gene", "virus", "heart", "blood"]
    docs = [{"_index": "user-hybrid", "_id": str(n), "_source": {
        "body": f"{words[n % 8]} {words[(n * 3) % 8]} study {n}",
        "vec": [1.0 + n % 5, 1.0 + n % 3, 1.0 + n % 7]}} for n in range(200)]
    _bulk_index(client, helpers, "user-hybrid", docs, mapping=mapping)
    template = {"query": {"match": {"body": "{{query}}"}},
                "knn": {"field": "vec", "query_vector": [1.0, 2.0, 3.0], "k": "{{size}}", "num_candidates": 100}}
    path = tmp_path / "hybrid.json"
    path.write_text(json.dumps(template))
    searcher = connect(engine, url, "user-hybrid", query=read_query_template(path))
    queries = ["cell protein", "brain virus", "heart blood gene"]
    ours = [[(h.doc_id, h.score) for h in hits] for hits in searcher.search_many(queries, 20)]
    direct = [[(h["_id"], h["_score"]) for h in _search(client, "user-hybrid", {
        "query": {"match": {"body": q}}, "size": 20,
        "knn": {"field": "vec", "query_vector": [1.0, 2.0, 3.0], "k": 20, "num_candidates": 100}})] for q in queries]
    assert ours == direct and all(len(hits) == 20 for hits in ours)


@pytest.mark.server
def test_rerank_reads_the_runs_documents_from_the_index(user_indexes, scifact, scifact_collection, tiny_cross_encoder,
                                                        tmp_path):
    from pipelines.runs import read_trec_run, write_trec_run

    engine, url, _ = user_indexes
    queries = scifact_collection.queries[:15]
    searcher = connect(engine, url, "user-hand", query=EngineQuery(fields=("headline", "body")), id_field="doc_key")
    write_trec_run(first_stage_run(searcher, queries, 20), tmp_path / "bm25.run", tag="bm25")
    common = ["rerank", "--data", str(scifact), "--split", "train", "--candidates", str(tmp_path / "bm25.run"),
              "--model", str(tiny_cross_encoder), "--dtype", "float32", "-q"]
    assert main(common + ["--out", str(tmp_path / "index.run"), "--retriever", engine, "--url", url, "--index",
                          "user-hand", "--id-field", "doc_key", "--rerank-fields", "headline,body"]) == 0
    assert main(common + ["--out", str(tmp_path / "memory.run")]) == 0
    from_index, from_data = read_trec_run(tmp_path / "index.run"), read_trec_run(tmp_path / "memory.run")
    assert len(from_index) == 15 and from_index == from_data


@pytest.mark.server
@pytest.mark.parametrize("user_indexes", ["opensearch"], indirect=True)  # register --index: OpenSearch's pipeline
def test_register_checks_the_rerank_fields_against_the_index(user_indexes, capsys):
    engine, url, _ = user_indexes
    code, line = _cli_error(capsys, ["register", "opensearch", "--url", url, "--index", "user-dynamic",
                                     "--rerank-fields", "abstract", "--service-url", "http://127.0.0.1:1"])
    assert code == 2 and "index 'user-dynamic' has no field 'abstract'; its text fields: headline, body" in line
