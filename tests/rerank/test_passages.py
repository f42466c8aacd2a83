"""Long documents as windows (MaxP), and the settings a trained model carries."""

import json

import numpy as np
import pytest
import torch
from run_agreement import assert_scores_within_bound
from sentence_transformers import CrossEncoder as STCrossEncoder
from transformers import AutoTokenizer

from rerank.cross_encoder import CrossEncoder
from rerank.passages import PassageConfig, RerankerSettings, best_of_windows, split_windows


@pytest.fixture(scope="module")
def abstracts(scifact):
    rows = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:60]]
    return [f"{r['title']} {r['text']}" for r in rows]


def test_windows_are_substrings_that_cover_the_text_and_fit(tiny_cross_encoder, abstracts):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_cross_encoder))
    window, overlap = 100, 20
    windows = split_windows(tokenizer, abstracts, window, overlap, max_windows=50)
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in abstracts]
    assert sum(n > window for n in lengths) > 30, "the test needs documents longer than a window"
    for text, parts, n in zip(abstracts, windows, lengths):
        if n <= window:
            assert parts == [text]
            continue
        assert len(parts) == -(-(n - overlap) // (window - overlap))
        position = 0
        for part in parts:
            assert part in text
            assert len(tokenizer(part, add_special_tokens=False)["input_ids"]) <= window + 2  # cut on token edges
            found = text.find(part, max(0, position - len(part)))
            assert found >= 0
            position = found + len(part)
        assert parts[0] == text[: len(parts[0])] and text.rstrip().endswith(parts[-1].rstrip())
    capped = split_windows(tokenizer, abstracts, window, overlap, max_windows=2)
    assert max(len(p) for p in capped) == 2


@pytest.mark.floats
def test_maxp_scores_are_the_best_window_scored_by_sentence_transformers(tiny_cross_encoder, abstracts):
    query = "vitamin c deficiency and scurvy"
    config = PassageConfig(mode="maxp", query_budget=24, overlap=16)
    ours = CrossEncoder(str(tiny_cross_encoder), max_length=96, dtype="float32", passages=config)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_cross_encoder))
    windows = split_windows(tokenizer, abstracts, config.window_tokens(96), config.overlap, config.max_windows)
    reference = STCrossEncoder(str(tiny_cross_encoder), max_length=96, activation_fn=torch.nn.Identity())
    expected = [max(reference.predict([(query, w) for w in parts])) for parts in windows]
    scores = ours.predict([(query, doc) for doc in abstracts])
    assert_scores_within_bound(scores, expected)
    first = CrossEncoder(str(tiny_cross_encoder), max_length=96, dtype="float32").predict([(query, d) for d in abstracts])
    assert not np.allclose(scores, first)  # windows beyond the first were read
    assert "passages='maxp'" in repr(ours)


def test_best_of_windows():
    scores = np.array([0.1, 0.7, -1.0, 0.3, 0.2], dtype=np.float32)
    np.testing.assert_array_equal(best_of_windows(scores, np.array([0, 0, 1, 2, 2]), 3), scores[[1, 2, 3]])


def test_a_model_is_read_with_the_settings_it_was_trained_with(tiny_cross_encoder, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_cross_encoder, model)
    assert CrossEncoder(str(model)).max_length == 512  # nothing saved: the BERT limit, first window
    RerankerSettings(max_length=192, passages=PassageConfig(mode="maxp", overlap=48)).save(model)
    loaded = CrossEncoder(str(model))
    assert loaded.max_length == 192 and loaded.passages == PassageConfig(mode="maxp", overlap=48)
    overridden = CrossEncoder(str(model), max_length=128, passages="first")
    assert overridden.max_length == 128 and overridden.passages.mode == "first"
    assert RerankerSettings.load(model) == RerankerSettings(192, PassageConfig(mode="maxp", overlap=48))


def test_windows_need_room_beside_the_query(tiny_cross_encoder):
    with pytest.raises(ValueError, match="leaves .* tokens for a window"):
        CrossEncoder(str(tiny_cross_encoder), max_length=60, passages="maxp")  # 60 - 32 - 3 < overlap 32
    with pytest.raises(ValueError, match="passage mode"):
        PassageConfig(mode="all")
