import math
from collections import Counter

import numpy as np
import pytest
from bm25_oracle import RankBM25Oracle

from retrieval.analysis import english_analyzer, standard_analyzer
from retrieval.bm25 import InMemoryBM25, lucene_decoded_length, lucene_encoded_length
from retrieval.corpus import load_beir


def lucene_bm25_oracle(analyzed_docs, query_terms, k1, b):
    """Lucene's BM25 written out from its definition, term by term, in plain Python floats."""
    n_docs = sum(1 for doc in analyzed_docs if doc)
    avgdl = sum(len(doc) for doc in analyzed_docs) / n_docs
    doc_freq = Counter(t for doc in analyzed_docs for t in set(doc))
    scores = []
    for doc in analyzed_docs:
        tf = Counter(doc)
        score = 0.0
        for term in query_terms:
            if tf[term]:
                idf = math.log(1 + (n_docs - doc_freq[term] + 0.5) / (doc_freq[term] + 0.5))
                score += idf * tf[term] / (tf[term] + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(score)
    return scores


@pytest.fixture(scope="module")
def collections(scifact, vaswani, cranfield):
    return {"scifact": load_beir(scifact, "train"), "vaswani": load_beir(vaswani, "test"),
            "cranfield": load_beir(cranfield, "test")}


@pytest.mark.parametrize("name", ["scifact", "vaswani", "cranfield"])
@pytest.mark.parametrize("implementation", [InMemoryBM25, RankBM25Oracle])
def test_scores_equal_lucene_formula(collections, name, implementation):
    collection = collections[name]
    k1, b = 0.9, 0.4
    index = implementation(collection.documents, k1=k1, b=b)
    analyzed = [english_analyzer(d.contents) for d in collection.documents]
    doc_ids = [d.doc_id for d in collection.documents]
    for query in collection.queries[:15]:
        oracle = lucene_bm25_oracle(analyzed, english_analyzer(query.text), k1, b)
        hits = index.search(query.text, k=50)
        assert hits, query
        for hit in hits:
            assert abs(hit.score - oracle[doc_ids.index(hit.doc_id)]) <= 1e-4
        # nothing outside the hits scores above the 50th
        assert sorted(oracle, reverse=True)[len(hits) - 1] == pytest.approx(hits[-1].score, abs=1e-4)


@pytest.mark.parametrize("name", ["scifact", "cranfield"])
def test_in_memory_bm25_and_the_rank_bm25_oracle_return_same_top100(collections, name):
    collection = collections[name]
    fast = InMemoryBM25(collection.documents)
    slow = RankBM25Oracle(collection.documents)
    queries = [q.text for q in collection.queries[:120]]
    for a, b in zip(fast.search_many(queries, 100), slow.search_many(queries, 100)):
        assert [h.doc_id for h in a] == [h.doc_id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-6)
        assert [h.rank for h in a] == list(range(1, len(a) + 1))


def test_search_many_equals_search_and_ties_keep_corpus_order():
    docs = [{"_id": f"d{i}", "title": "", "text": "apple banana"} for i in range(5)]
    docs.append({"_id": "x", "title": "apple", "text": "apple"})
    index = InMemoryBM25(docs, analyzer="standard")
    hits = index.search("apple", k=4)
    assert [h.doc_id for h in hits] == ["x", "d0", "d1", "d2"]
    assert index.search_many(["apple", "banana"], k=3)[0] == index.search("apple", k=3)


def test_search_many_arrays_holds_the_same_results_as_the_hits(collections):
    collection = collections["cranfield"]
    index = InMemoryBM25(collection.documents)
    queries = [q.text for q in collection.queries[:40]] + ["zzzunknownterm", "boundary"]
    top = index.search_many_arrays(queries, 30)
    assert top.doc_indices.shape == top.scores.shape == (len(queries), 30)
    for q, hits in enumerate(index.search_many(queries, 30)):
        n = top.counts[q]
        assert n == len(hits)
        assert [index.doc_ids[i] for i in top.doc_indices[q, :n]] == [h.doc_id for h in hits]
        assert top.scores[q, :n].tolist() == [h.score for h in hits]
        assert (top.doc_indices[q, n:] == -1).all() and (top.scores[q, n:] == 0).all()
    assert top.counts.min() < 30  # the padding was exercised
    tiny = InMemoryBM25([{"_id": "a", "title": "", "text": "apple"}, {"_id": "b", "title": "", "text": "pear"}])
    assert tiny.search_many_arrays(["apple"], 5).doc_indices.tolist() == [[0, -1, -1, -1, -1]]


def test_k1_b_and_standard_analyzer_are_used():
    docs = [{"_id": "1", "title": "", "text": "running runs"}, {"_id": "2", "title": "", "text": "run"}]
    assert InMemoryBM25(docs, analyzer="standard").search("run", 5)[0].doc_id == "2"
    assert len(InMemoryBM25(docs, analyzer="english").search("run", 5)) == 2
    analyzed = [standard_analyzer("running runs"), standard_analyzer("run")]
    for k1, b in [(1.2, 0.75), (0.5, 0.0)]:
        hit = InMemoryBM25(docs, k1=k1, b=b, analyzer="standard").search("run", 1)[0]
        assert hit.score == pytest.approx(lucene_bm25_oracle(analyzed, ["run"], k1, b)[1], abs=1e-9)


def test_lucene_length_quantization():
    # Exact below 24 terms; above, 4 significant bits; the decoded length never exceeds the true one.
    assert [lucene_decoded_length(lucene_encoded_length(n)) for n in range(24)] == list(range(24))
    decoded = [lucene_decoded_length(lucene_encoded_length(n)) for n in range(24, 5000)]
    assert all(d <= n for d, n in zip(decoded, range(24, 5000)))
    assert decoded == sorted(decoded)
    assert len(set(decoded)) < 100
    assert lucene_encoded_length(2**31 - 1) == 255


def test_lucene_length_norm_changes_only_long_documents():
    docs = [{"_id": "short", "title": "", "text": "alpha beta"},
            {"_id": "long", "title": "", "text": "alpha " + " ".join(f"w{i}" for i in range(100))}]
    exact = {h.doc_id: h.score for h in InMemoryBM25(docs).search("alpha", 2)}
    lucene = {h.doc_id: h.score for h in InMemoryBM25(docs, length_norm="lucene").search("alpha", 2)}
    assert lucene["long"] > exact["long"]  # 101 terms are stored as 88: a shorter norm, a higher score


def test_save_and_load_round_trip(tmp_path, collections):
    collection = collections["cranfield"]
    index = InMemoryBM25(collection.documents, k1=1.1, b=0.6)
    index.save(tmp_path / "idx")
    params = (tmp_path / "idx" / "params.json").read_text()
    assert '"k1": 1.1' in params and '"analyzer": "english"' in params and "library_version" in params
    loaded = InMemoryBM25.load(tmp_path / "idx")
    queries = [q.text for q in collection.queries[:20]]
    assert loaded.search_many(queries, 10) == index.search_many(queries, 10)
    assert loaded.fetch_texts([collection.documents[3].doc_id]) == [collection.documents[3].contents]


def test_bad_input_is_rejected_clearly():
    docs = [{"_id": "1", "title": "", "text": "a b"}]
    index = InMemoryBM25(docs)
    with pytest.raises(ValueError, match="empty"):
        index.search("   ", 10)
    with pytest.raises(ValueError, match="positive integer"):
        index.search("b", 0)
    with pytest.raises(TypeError, match="list of query strings"):
        index.search_many("b", 1)
    with pytest.raises(ValueError, match="empty corpus"):
        InMemoryBM25([])
    with pytest.raises(ValueError, match="needs '_id' and 'text'"):
        InMemoryBM25([{"id": "1"}])
    assert index.search("the of", 10) == []  # only stop words: a valid query with no hits
