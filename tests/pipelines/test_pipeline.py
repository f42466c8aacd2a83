import math

import ir_measures
import numpy as np
import pytest
from run_agreement import reproducibility_violations

from esrerank_errors import DataError
from pipelines.evaluation import compare, mean_scores, per_query_scores
from pipelines.retrieve_rerank import RetrieveRerank
from pipelines.runs import read_trec_run, write_trec_run
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir
from retrieval.records import Hit


class CountingReranker:
    """A real cross-encoder (the tiny model built in conftest), counting the pairs of each call."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def predict(self, pairs):
        self.calls.append(len(pairs))
        return self.model.predict(pairs)


@pytest.fixture(scope="module")
def cran(cranfield):
    return load_beir(cranfield, "test")


@pytest.mark.floats
def test_rerank_reorders_head_and_keeps_tail(cran, spread_cross_encoder):
    from rerank.cross_encoder import CrossEncoder

    model = CrossEncoder(str(spread_cross_encoder), max_length=128, dtype="float32")
    index = InMemoryBM25(cran.documents)
    reranker = CountingReranker(model)
    pipeline = RetrieveRerank(index, reranker, retrieve_k=50, rerank_k=10, queries_per_batch=4)
    queries = cran.queries[:9]
    run = pipeline.run(queries)
    bm25 = index.search_many([q.text for q in queries], 50)
    assert reranker.calls == [40, 40, 10]
    for query, hits, first in zip(queries, run.values(), bm25):
        assert len(hits) == 50 and [h.rank for h in hits] == list(range(1, 51))
        # the head is the first stage's top 10 in the order the model scores them one query at a time (other
        # batches than the pipeline's: within the reproducibility bound)
        head_ids = [h.doc_id for h in first[:10]]
        alone = model.predict([(query.text, text) for text in index.fetch_texts(head_ids)])
        expected = [Hit(head_ids[i], float(alone[i]), rank) for rank, i in
                    enumerate(np.argsort(-alone, kind="stable"), start=1)]
        assert reproducibility_violations({query.query_id: expected}, {query.query_id: hits[:10]}) == []
        assert [h.doc_id for h in hits[10:]] == [h.doc_id for h in first[10:]]
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True) and len(set(scores[9:])) == 41
    alone = pipeline.search(queries[0].text)  # scored in a batch of its own: within the bound
    assert reproducibility_violations({"q": run[queries[0].query_id]}, {"q": alone}) == []


def test_without_reranker_the_first_stage_passes_through(cran):
    index = InMemoryBM25(cran.documents)
    pipeline = RetrieveRerank(index, None, retrieve_k=20)
    assert pipeline.search_many([cran.queries[0].text]) == [index.search(cran.queries[0].text, 20)]


def test_measures_equal_ir_measures_and_missing_queries_score_zero(cran):
    index = InMemoryBM25(cran.documents)
    run = dict(zip((q.query_id for q in cran.queries), index.search_many([q.text for q in cran.queries], 1000)))
    ours = mean_scores(per_query_scores(run, cran.qrels))
    run_dict = {q: {h.doc_id: h.score for h in hits} for q, hits in run.items()}
    measures = [ir_measures.parse_measure(m) for m in ours]
    reference = ir_measures.calc_aggregate(measures, cran.qrels, run_dict)
    for name, value in ours.items():
        assert value == pytest.approx(reference[ir_measures.parse_measure(name)], abs=1e-9)
    partial = dict(list(run.items())[: len(run) // 2])
    half = mean_scores(per_query_scores(partial, cran.qrels, ["nDCG@10"]))["nDCG@10"]
    values = [r.value for r in ir_measures.iter_calc([ir_measures.nDCG @ 10], cran.qrels,
                                                      {q: run_dict[q] for q in partial})]
    assert half == pytest.approx(sum(values) / len(cran.qrels))
    assert half < 0.75 * mean_scores(per_query_scores(run, cran.qrels, ["nDCG@10"]))["nDCG@10"]


def test_paired_t_test_equals_its_formula():
    # t = mean(d) / (sd(d) / sqrt(n)) on the per-query differences d, two-sided p from Student's t with
    # n - 1 degrees of freedom: written out here, not the scipy.stats.ttest_rel call the code makes
    from scipy.stats import t as student_t

    base = {"AP": {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.2}}
    system = {"AP": {"a": 0.3, "b": 0.5, "c": 0.35, "d": 0.4}}
    differences = [0.2, 0.1, 0.05, 0.2]
    mean = sum(differences) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / 3)
    t_statistic = mean / (sd / math.sqrt(4))
    (result,) = compare(base, system)
    assert t_statistic == pytest.approx(11 / 3)  # mean 0.1375, sd 0.075
    assert result.p_value == pytest.approx(2 * student_t.sf(t_statistic, df=3), rel=1e-9)
    assert result.delta == pytest.approx(0.1375)
    assert math.isnan(compare(base, base)[0].p_value)
    # each side carries its own bootstrap interval of the mean, the one format_table prints
    from pipelines.evaluation import bootstrap_ci, format_table

    assert result.baseline_ci == bootstrap_ci([0.1, 0.4, 0.3, 0.2]) and result.system_ci == bootstrap_ci(
        [0.3, 0.5, 0.35, 0.4])
    assert result.baseline_ci[0] < 0.25 < result.baseline_ci[1]
    row = format_table([result]).splitlines()[2]
    assert f"[{result.system_ci[0]:.3f}, {result.system_ci[1]:.3f}]" in row and "0.3875" in row


def test_trec_run_round_trip_and_errors(tmp_path):
    # scores 1e-9 apart, a float32's widened value and a tiny one: each reads back as the very float written
    close = float(np.float32(0.1))
    run = {"q1": [Hit("d3", 2.5, 1), Hit("d1", 1.25, 2), Hit("d4", 1.250000001, 3)],
           "q2": [Hit("d9", close, 1), Hit("d8", -0.5, 2), Hit("d7", -3.0e-12, 3)]}
    path = tmp_path / "run.txt"
    write_trec_run(run, path, tag="test")
    assert path.read_text().splitlines()[0] == "q1 Q0 d3 1 2.5 test"
    assert path.read_text().splitlines()[3] == "q2 Q0 d9 1 0.10000000149011612 test"
    assert read_trec_run(path) == {"q1": [run["q1"][0], Hit("d4", 1.250000001, 2), Hit("d1", 1.25, 3)],
                                   "q2": [run["q2"][0], Hit("d7", -3.0e-12, 2), Hit("d8", -0.5, 3)]}
    assert read_trec_run(path, k=1)["q1"] == [Hit("d3", 2.5, 1)]
    path.write_text("q1 Q0 d1 1 2.0 tag\nq1 Q0 d2 x 1.0 tag\n")
    with pytest.raises(DataError, match=r"run.txt:2: rank 'x' or score '1.0' is not a number"):
        read_trec_run(path)
    path.write_text("q1 d1 1 2.0\n")
    with pytest.raises(DataError, match=r"run.txt:1: expected 6 columns"):
        read_trec_run(path)


def test_fusion_interpolates_normalized_scores_and_rrf_ranks():
    from pipelines.fusion import RRF_K, fuse

    head = [Hit("a", 10.0, 1), Hit("b", 6.0, 2), Hit("c", 2.0, 3)]
    reranker = np.array([0.0, 5.0, 10.0])
    assert fuse(head, reranker, None, 0.3).tolist() == reranker.tolist()
    interpolated = fuse(head, reranker, "interpolate", 0.25)
    assert interpolated == pytest.approx([0.75 * 1.0, 0.25 * 0.5 + 0.75 * 0.5, 0.25 * 1.0])
    rrf = fuse(head, reranker, "rrf", 0.5)
    assert rrf == pytest.approx([0.5 / (RRF_K + 3) + 0.5 / (RRF_K + 1), 0.5 / (RRF_K + 2) + 0.5 / (RRF_K + 2),
                                 0.5 / (RRF_K + 1) + 0.5 / (RRF_K + 3)])
    assert fuse(head, reranker, "interpolate", 1.0).tolist() == pytest.approx([0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="fusion must be"):
        RetrieveRerank(None, None, fusion="sum")


def test_bootstrap_interval_brackets_the_mean():
    from pipelines.evaluation import bootstrap_ci

    values = np.random.default_rng(1).random(200)
    low, high = bootstrap_ci(values)
    assert low < values.mean() < high and 0.05 < high - low < 0.1


def test_the_fusion_chosen_is_the_best_of_the_grid_on_the_queries_given():
    # Known answer: BM25 ranks the relevant d1 first, the reranker last (nDCG@10 1/log2(4) = 0.5 alone). A
    # fusion that leans on BM25 puts d1 first (1.0); the first such setting of the grid is interpolate 0.1.
    from pipelines.experiment import EvaluationResult
    from pipelines.recipe import choose_fusion
    from retrieval.records import Hit, Query

    first_stage = {"q": [Hit("d1", 3.0, 1), Hit("d2", 2.0, 2), Hit("d3", 1.0, 3)]}
    reranked = {"q": [Hit("d3", 2.0, 1), Hit("d2", 1.0, 2), Hit("d1", 0.0, 3)]}
    result = EvaluationResult({"reranked": {"nDCG@10": 0.5}}, {}, first_stage, reranked)
    choice = choose_fusion([Query("q", "a query")], {"q": {"d1": 1}}, result, rerank_k=3)
    assert (choice["fusion"], choice["alpha"], choice["chosen_on"], choice["queries"]) == ("interpolate", 0.1, "dev", 1)
    assert choice["nDCG@10"] == 1.0 and choice["beats_reranker_alone"]
    assert choice["grid"]["interpolate:1.0"] == pytest.approx(0.5)  # the reranker's order alone
