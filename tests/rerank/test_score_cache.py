"""The persistent score cache: the scores it answers are the model's, it scores only what it lacks, it belongs
to one model, and it refuses a model whose pair scores depend on their ranking."""

from __future__ import annotations

import json
import shutil
import sqlite3

import numpy as np
import pytest
from run_agreement import assert_scores_within_bound

from esrerank_errors import DataError, InputError
from rerank.cross_encoder import CrossEncoder
from rerank.score_cache import ScoreCache, model_fingerprint

PAIRS = [("what is bm25", "BM25 is a ranking function"), ("what is bm25", "bananas are yellow"),
         ("how do wings lift", "the pressure under a wing is higher"), ("what is bm25", "BM25 is a ranking function")]


@pytest.fixture(scope="module")
def model(tiny_cross_encoder):
    return CrossEncoder(str(tiny_cross_encoder), max_length=64, dtype="float32", show_progress=False)


@pytest.mark.floats
def test_answers_are_the_models_and_only_new_pairs_are_scored(model, tmp_path):
    cache = ScoreCache(tmp_path / "scores.sqlite", model)
    first = cache.predict(PAIRS[:2])
    assert first.tolist() == model.predict(PAIRS[:2]).tolist()
    assert (cache.hits, cache.misses) == (0, 2)
    both = cache.predict(PAIRS)  # two known, one new, and a repeat of a known one
    assert (cache.hits, cache.misses) == (3, 3)
    assert both[:2].tolist() == first.tolist() and both[3] == both[0]
    assert_scores_within_bound(both[2:3], model.predict(PAIRS[2:3]))  # scored alone here, beside others there
    cache.close()
    again = ScoreCache(tmp_path / "scores.sqlite", model)  # persistent: a new process would see the same
    assert again.predict(PAIRS).tolist() == both.tolist() and again.misses == 0
    assert sqlite3.connect(tmp_path / "scores.sqlite").execute("SELECT count(*) FROM scores").fetchone()[0] == 3


def test_another_model_is_refused(model, tiny_cross_encoder, tmp_path):
    ScoreCache(tmp_path / "scores.sqlite", model).predict(PAIRS[:1])
    changed = tmp_path / "changed"
    shutil.copytree(tiny_cross_encoder, changed)
    config = json.loads((changed / "config.json").read_text())
    config["esrerank_note"] = "another model"
    (changed / "config.json").write_text(json.dumps(config))
    other = CrossEncoder(str(changed), max_length=64, dtype="float32", show_progress=False)
    assert model_fingerprint(other) != model_fingerprint(model)
    with pytest.raises(DataError, match="another model"):
        ScoreCache(tmp_path / "scores.sqlite", other)
    shorter = CrossEncoder(str(tiny_cross_encoder), max_length=32, dtype="float32", show_progress=False)
    with pytest.raises(DataError, match="another model"):  # an option that changes scores is part of the model
        ScoreCache(tmp_path / "scores.sqlite", shorter)


def test_a_model_that_rescores_its_rankings_tops_is_refused(tiny_cross_encoder, tmp_path):
    rescoring = CrossEncoder(str(tiny_cross_encoder), max_length=64, dtype="bfloat16", exact_top_k=10,
                             show_progress=False)
    with pytest.raises(InputError, match="--dtype float32"):
        ScoreCache(tmp_path / "scores.sqlite", rescoring)


@pytest.mark.floats
def test_evaluate_with_a_cache_measures_the_same_and_scores_nothing_the_second_time(small_beir, tiny_cross_encoder,
                                                                                   tmp_path):
    from pipelines.cli import main

    common = ["evaluate", "--data", str(small_beir), "--model", str(tiny_cross_encoder), "--rerank-k", "20",
              "--max-length", "64", "--dtype", "float32", "-q", "--output-json"]
    assert main([*common, str(tmp_path / "plain.json")]) == 0
    cache = tmp_path / "cache" / "scores.sqlite"
    assert main([*common, str(tmp_path / "first.json"), "--score-cache", str(cache)]) == 0
    stored = sqlite3.connect(cache).execute("SELECT count(*) FROM scores").fetchone()[0]
    assert stored > 0
    assert main([*common, str(tmp_path / "fused.json"), "--score-cache", str(cache), "--fusion", "rrf"]) == 0
    assert sqlite3.connect(cache).execute("SELECT count(*) FROM scores").fetchone()[0] == stored  # nothing new
    plain, first = (json.loads((tmp_path / n).read_text()) for n in ("plain.json", "first.json"))
    # an empty cache scores every pair in the batches the plain run makes: the same floats, the same measures
    assert first["reranked"] == pytest.approx(plain["reranked"], abs=1e-9)
    assert np.isfinite(json.loads((tmp_path / "fused.json").read_text())["reranked"]["nDCG@10"])


def test_the_cache_is_refused_where_no_cross_encoder_scores_here(small_beir, tmp_path, capsys):
    from pipelines.cli import main

    assert main(["evaluate", "--data", str(small_beir), "--model", "none", "--score-cache",
                 str(tmp_path / "scores.sqlite"), "-q"]) == 2
    assert "--score-cache" in capsys.readouterr().err
    assert not (tmp_path / "scores.sqlite").exists()
