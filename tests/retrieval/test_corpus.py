import logging

import pytest

from esrerank_errors import DataError
from retrieval.corpus import (
    SkippedLines,
    iter_beir_corpus,
    iter_msmarco_collection,
    load_beir,
    load_collection,
    read_beir_queries,
    read_msmarco_queries,
    read_qrels,
)


def _beir(folder, corpus, queries, qrels):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text(corpus)
    (folder / "queries.jsonl").write_text(queries)
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def test_real_collections_load(scifact, vaswani, cranfield):
    c = load_beir(scifact, "train")
    assert (len(c.documents), len(c.queries)) == (5183, 809)
    assert sum(len(j) for j in c.qrels.values()) == 919
    cran = load_beir(cranfield, "test")
    assert len(cran.queries) == 225 and max(g for j in cran.qrels.values() for g in j.values()) == 4
    assert len(load_beir(vaswani, "test").documents) == 11429


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "1", "title": "", "text": "ok"}\n{"_id": "2", "text": \n{"_id": "3", "text": "x"}\n')
    with pytest.raises(DataError) as error:
        list(iter_beir_corpus(path))
    assert str(error.value).startswith(f"{path}:2: malformed JSON")
    skipped = SkippedLines()
    assert [d.doc_id for d in iter_beir_corpus(path, on_error="skip", skipped=skipped)] == ["1", "3"]
    assert skipped.entries == [(str(path), 2, skipped.entries[0][2])]


def test_missing_fields_and_files(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "1", "title": "t"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:1: missing field 'text'"):
        list(iter_beir_corpus(path))
    with pytest.raises(DataError, match="corpus file not found"):
        list(iter_beir_corpus(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="data folder not found"):
        load_beir(tmp_path / "absent")
    _beir(tmp_path / "c", '{"_id": "1", "text": "x"}\n', '{"_id": "q", "text": "x"}\n', "query-id\tcorpus-id\tscore\nq\t1\t1\n")
    with pytest.raises(DataError, match=r"split 'dev' not found \(splits here: \['test'\]\)"):
        load_beir(tmp_path / "c", "dev")


def test_empty_and_duplicate_queries(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "1", "text": "fine"}\n{"_id": "2", "text": "  "}\n')
    with pytest.raises(DataError, match=r"queries.jsonl:2: query '2' has empty text"):
        read_beir_queries(path)
    path.write_text('{"_id": "1", "text": "a"}\n{"_id": "1", "text": "b"}\n')
    with pytest.raises(DataError, match=r":2: duplicate query id '1' \(first on line 1\)"):
        read_beir_queries(path)


def test_qrels_with_unknown_ids_warn_and_count(tmp_path, caplog):
    folder = _beir(tmp_path / "c", '{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": "y"}\n',
                   '{"_id": "q1", "text": "x"}\n',
                   "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tghost\t1\nq9\td2\t1\nq8\td2\t2\n")
    with caplog.at_level(logging.WARNING):
        collection = load_beir(folder)
    assert "2 judged query ids are not in the queries file" in caplog.text
    assert "1 judged doc ids are not in the corpus" in caplog.text
    assert collection.qrels == {"q1": {"d1": 1, "ghost": 1}}


def test_qrels_formats_and_errors(tmp_path):
    trec = tmp_path / "qrels.txt"
    trec.write_text("1 0 d1 2\n1 0 d2 0\n")
    assert read_qrels(trec) == {"1": {"d1": 2, "d2": 0}}
    trec.write_text("1 0 d1 1\n1 d2\n")
    with pytest.raises(DataError, match=r"qrels.txt:2: expected 3 \(BEIR\) or 4 \(TREC\) columns, got 2"):
        read_qrels(trec)
    trec.write_text("1 0 d1 high\n")
    with pytest.raises(DataError, match=r":1: relevance 'high' is not a number"):
        read_qrels(trec)


def test_msmarco_tsv_readers(tmp_path):
    collection = tmp_path / "collection.tsv"
    collection.write_text("0\tThe first passage.\n1\tSecond one\n2 missing tab\n")
    with pytest.raises(DataError, match=r"collection.tsv:3: expected 2 tab-separated columns"):
        list(iter_msmarco_collection(collection))
    docs = list(iter_msmarco_collection(collection, on_error="skip"))
    assert [(d.doc_id, d.title, d.text) for d in docs] == [("0", "", "The first passage."), ("1", "", "Second one")]
    queries = tmp_path / "queries.dev.tsv"
    queries.write_text("10\twhat is bm25\n11\t\n")
    with pytest.raises(DataError, match=r":2: query '11' has empty text"):
        read_msmarco_queries(queries)


def test_load_collection_routes_local_and_hub(tmp_path, cranfield):
    assert load_collection(str(cranfield)).name == "cranfield"
    with pytest.raises(DataError, match="data folder not found .* known names"):
        load_collection("no-such-collection")
