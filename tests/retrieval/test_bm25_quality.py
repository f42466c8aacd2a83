"""BM25 scores and effectiveness against bm25s, an independent Lucene-formula implementation, on SciFact."""

import bm25s
import pytest

from pipelines.evaluation import mean_scores, per_query_scores
from retrieval.analysis import ENGLISH_STOP_WORDS, english_analyzer
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir
from retrieval.porter import porter_stem
from retrieval.records import Hit


class _LucenePorter:
    def stemWords(self, words):
        return [porter_stem(w) for w in words]


def _bm25s_run(collection, tokenize, dtype="float32"):
    retriever = bm25s.BM25(k1=0.9, b=0.4, method="lucene", dtype=dtype)
    retriever.index(tokenize([d.contents for d in collection.documents]), show_progress=False)
    docs, scores = retriever.retrieve(tokenize([q.text for q in collection.queries]), k=100, show_progress=False)
    return {q.query_id: [Hit(collection.documents[d].doc_id, float(s), r + 1)
                         for r, (d, s) in enumerate(zip(row_docs, row_scores)) if s > 0]
            for q, row_docs, row_scores in zip(collection.queries, docs, scores)}


@pytest.fixture(scope="module")
def scifact_collection(scifact):
    return load_beir(scifact, "train")


@pytest.fixture(scope="module")
def our_run(scifact_collection):
    c = scifact_collection
    index = InMemoryBM25(c.documents, k1=0.9, b=0.4)
    return dict(zip((q.query_id for q in c.queries), index.search_many([q.text for q in c.queries], 100)))


@pytest.fixture(scope="module")
def our_ndcg(scifact_collection, our_run):
    return mean_scores(per_query_scores(our_run, scifact_collection.qrels, ["nDCG@10"]))["nDCG@10"]


# Both compute Lucene's formula in float64 from the same tokens, in another order (a sum over at most 25 query
# terms on SciFact, each term's value a few roundings away from exact; log1p here, log(1 + x) there): they can
# differ by about 2 x 25 x 2^-52, 1e-14 relative. 1e-13 allows for that and nothing more; observed: 5e-16.
# (bm25s' default float32 differs from float64 by up to 2e-7 relative.)
SAME_SCORE = 1e-13


def test_same_analysis_gives_bm25s_scores_and_effectiveness_exactly(scifact_collection, our_run, our_ndcg):
    run = _bm25s_run(scifact_collection, lambda texts: [english_analyzer(t) for t in texts], dtype="float64")
    for query in scifact_collection.queries:
        ours, theirs = our_run[query.query_id], run[query.query_id]
        assert len(ours) == len(theirs) > 0, query  # 100, or every document that matches a query term
        # the same 100 scores, best first: the same ranking up to the order of tied documents
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], rel=SAME_SCORE, abs=0)
        their_scores = {h.doc_id: h.score for h in theirs}
        for hit in ours:
            if hit.doc_id in their_scores:  # each document gets the same score
                assert hit.score == pytest.approx(their_scores[hit.doc_id], rel=SAME_SCORE, abs=0)
            else:  # or it is one of documents tied at the cut, which each keeps a different one of
                assert hit.score == pytest.approx(ours[-1].score, rel=SAME_SCORE, abs=0), (query, hit)
        # ir-measures orders by score, then doc id. Scores within SAME_SCORE of each other here are exactly
        # equal, in both runs: each run's order is the other's, and so are its measures, to the last bit.
        for a, b in zip(ours, ours[1:]):
            if a.score == pytest.approx(b.score, rel=SAME_SCORE, abs=0):
                assert a.score == b.score and their_scores.get(a.doc_id) == their_scores.get(b.doc_id), (a, b)
    theirs = mean_scores(per_query_scores(run, scifact_collection.qrels, ["nDCG@10"]))["nDCG@10"]
    assert our_ndcg == theirs


def test_bm25s_own_tokenizer_with_same_stemmer_is_within_001(scifact_collection, our_ndcg):
    # bm25s splits on \w\w+ (drops one-letter tokens, breaks "3.14"); only tokenization differs.
    def tokenize(texts):
        return bm25s.tokenize(texts, stopwords=sorted(ENGLISH_STOP_WORDS), stemmer=_LucenePorter(),
                                                show_progress=False)
    run = _bm25s_run(scifact_collection, tokenize)
    theirs = mean_scores(per_query_scores(run, scifact_collection.qrels, ["nDCG@10"]))["nDCG@10"]
    assert abs(our_ndcg - theirs) <= 0.01
    assert 0.66 < our_ndcg < 0.74  # in line with Lucene BM25 on SciFact (Anserini: 0.679 on the test split)
