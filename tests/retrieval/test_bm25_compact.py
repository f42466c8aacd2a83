"""The compact in-memory index: streamed build, string store, saved folders, and exactness of the
postings kernel against a dense float64 scorer written with numpy."""

import json
import math

import numpy as np
import pytest
from bm25_oracle import lucene_lengths

from retrieval.analysis import english_analyzer
from retrieval.bm25 import InMemoryBM25, lucene_idf
from retrieval.corpus import load_beir
from retrieval.string_store import StringStore


@pytest.fixture(scope="module")
def vaswani_collection(vaswani):
    return load_beir(vaswani, "test")


def dense_scores(analyzed, query_terms, k1, b, length_norm="exact"):
    """Every document's score as the textbook formula, vectorized over documents (the oracle)."""
    lengths = np.array([len(doc) for doc in analyzed])
    doc_count = int((lengths > 0).sum())
    avgdl = lengths.sum() / doc_count
    dl = lucene_lengths(lengths) if length_norm == "lucene" else lengths.astype(np.float64)
    norm = k1 * (1 - b + b * dl / avgdl)
    scores = np.zeros(len(analyzed))
    for term in query_terms:
        tf = np.array([doc.count(term) for doc in analyzed], dtype=np.float64)
        df = int((tf > 0).sum())
        if df:
            scores += np.where(tf > 0, lucene_idf(df, doc_count) * tf / (tf + norm), 0.0)
    return scores


@pytest.mark.parametrize("length_norm", ["exact", "lucene"])
def test_top_1000_is_the_dense_scorers_top_1000(vaswani_collection, length_norm):
    """Whole ranking to depth 1000 (ties by corpus order) against the dense oracle; queries whose postings
    cover a quarter of the corpus take the kernel's sequential-scan path, the others its touched list."""
    documents = vaswani_collection.documents
    analyzed = [english_analyzer(d.contents) for d in documents]
    index = InMemoryBM25(documents, length_norm=length_norm, batch_docs=1000)
    queries = [q.text for q in vaswani_collection.queries[:40]] + ["the use of computers in measurement of results"]
    postings = [sum(int(np.diff(index.indptr)[index.vocabulary[t]]) for t in set(english_analyzer(q))
                    if t in index.vocabulary) for q in queries]
    assert max(postings) >= len(index) / 4 > min(postings)  # both selection paths are exercised
    in_blocks = InMemoryBM25(documents, length_norm=length_norm)
    in_blocks._block_docs = 1000  # many blocks, as at MS MARCO scale (65,536 documents a block)
    assert in_blocks.search_many(queries, 1000) == index.search_many(queries, 1000)
    for query, hits in zip(queries, index.search_many(queries, 1000)):
        oracle = dense_scores(analyzed, english_analyzer(query), 0.9, 0.4, length_norm)
        matched = np.flatnonzero(oracle > 0)
        order = matched[np.lexsort((matched, -oracle[matched]))][:1000]
        assert [h.doc_id for h in hits] == [documents[i].doc_id for i in order]
        np.testing.assert_allclose([h.score for h in hits], oracle[order], rtol=1e-12)


def test_streams_a_generator_and_batch_size_does_not_change_results(vaswani_collection):
    documents = vaswani_collection.documents
    rows = ({"_id": d.doc_id, "text": d.contents} for d in documents)  # a generator, read once
    streamed = InMemoryBM25(rows, batch_docs=777)
    whole = InMemoryBM25(documents, batch_docs=100_000)
    queries = [q.text for q in vaswani_collection.queries]
    assert streamed.search_many(queries, 100) == whole.search_many(queries, 100)
    assert streamed.fetch_texts(["42", "7"]) == [documents[41].contents, documents[6].contents]
    assert streamed.docs.dtype == np.int32 and streamed.tfs.dtype == np.uint8


def test_duplicate_ids_are_named_with_their_positions():
    rows = [{"_id": "a", "text": "x"}, {"_id": "b", "text": "y"}, {"_id": "a", "text": "z"}]
    with pytest.raises(ValueError, match=r"duplicate doc ids: 'a' \(documents 0 and 2\)"):
        InMemoryBM25(rows, batch_docs=2)
    with pytest.raises(TypeError, match="not a path"):
        InMemoryBM25("collection.tsv")


def test_saved_index_is_memory_mapped_and_answers_the_same(tmp_path, vaswani_collection):
    index = InMemoryBM25(vaswani_collection.documents)
    index.save(tmp_path / "index")
    loaded = InMemoryBM25.load(tmp_path / "index")
    assert isinstance(loaded.docs, np.memmap) and isinstance(loaded.doc_ids.buffer, np.memmap)
    queries = [q.text for q in vaswani_collection.queries]
    assert loaded.search_many(queries, 50) == index.search_many(queries, 50)
    assert loaded.fetch_texts(["11429"]) == index.fetch_texts(["11429"])
    params = json.loads((tmp_path / "index" / "params.json").read_text())
    assert (params["k1"], params["b"], params["analyzer"], params["format_version"]) == (0.9, 0.4, "english", 2)
    params["format_version"] = 1
    (tmp_path / "index" / "params.json").write_text(json.dumps(params))
    with pytest.raises(ValueError, match="format 1 is not 2; build the index again"):
        InMemoryBM25.load(tmp_path / "index")


def test_string_store_round_trips_and_finds_values(tmp_path):
    values = ["", "a", "ümlaut", "中文", "a" * 1000] + [f"id-{i}" for i in range(5000)]
    store = StringStore.from_strings(values, tmp_path / "s.bin")
    assert len(store) == len(values) and list(store) == values and store[-1] == values[-1]
    assert store.take([4, 2, 2]) == [values[4], values[2], values[2]]
    assert store.positions(["id-4999", "missing", "", "中文"]).tolist() == [len(values) - 1, -1, 0, 3]
    assert store.duplicates() == []
    doubled = StringStore.from_strings(["x", "y", "x"], tmp_path / "d.bin")
    assert doubled.duplicates() == [("x", 0, 2)]
    with pytest.raises(IndexError):
        store[len(values)]
    assert math.isclose(store.offsets[-1], sum(len(v.encode()) for v in values))


def test_two_analysis_processes_build_the_same_index(vaswani_collection):
    documents = vaswani_collection.documents
    one = InMemoryBM25(documents, batch_docs=1000)
    two = InMemoryBM25(iter(documents), batch_docs=1000, workers=2)
    assert sorted(two.vocabulary) == sorted(one.vocabulary)
    queries = [q.text for q in vaswani_collection.queries]
    assert two.search_many(queries, 100) == one.search_many(queries, 100)
    same_terms = [one.vocabulary[t] for t in sorted(one.vocabulary)], [two.vocabulary[t] for t in sorted(one.vocabulary)]
    assert np.array_equal(np.diff(one.indptr)[same_terms[0]], np.diff(two.indptr)[same_terms[1]])
