import json

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder as SentenceTransformersCrossEncoder

from rerank.cross_encoder import CrossEncoder
from rerank.errors import ModelError


@pytest.fixture(scope="module")
def pairs(scifact):
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:40]]
    queries = [json.loads(line)["text"] for line in (scifact / "queries.jsonl").read_text().splitlines()[:3]]
    # SciFact abstracts run to several hundred tokens: with max_length 128 most pairs are truncated.
    return [(q, f"{d['title']} {d['text']}") for q in queries for d in docs] + [("short", "pair"), ("", "empty query")]


def test_float32_scores_equal_sentence_transformers_including_truncated_pairs(minilm_cross_encoder, pairs):
    ours = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32")
    lengths = [len(ours.tokenizer(q, d)["input_ids"]) for q, d in pairs]
    assert sum(n > 128 for n in lengths) > 50, "the test must include pairs longer than max_length"
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=128,
                                                 activation_fn=torch.nn.Identity())
    expected = reference.predict(pairs, batch_size=16)
    np.testing.assert_allclose(ours.predict(pairs), expected, atol=1e-4, rtol=0)


def test_sigmoid_activation_equals_sentence_transformers_default(minilm_cross_encoder, pairs):
    ours = CrossEncoder(str(minilm_cross_encoder), max_length=256, dtype="float32", activation="sigmoid")
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=256)
    np.testing.assert_allclose(ours.predict(pairs[:30]), reference.predict(pairs[:30]), atol=1e-5, rtol=0)


def test_rank_matches_sentence_transformers(minilm_cross_encoder, pairs):
    query, docs = pairs[0][0], [d for _, d in pairs[:40]]
    ours = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32")
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=128,
                                                 activation_fn=torch.nn.Identity())
    ranked = ours.rank(query, docs, top_k=10, return_documents=True)
    expected = reference.rank(query, docs, top_k=10, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == [r["corpus_id"] for r in expected]
    assert all(r["text"] == docs[r["corpus_id"]] for r in ranked)
    assert [r["score"] for r in ranked] == pytest.approx([r["score"] for r in expected], abs=1e-4)


def test_token_budget_batches_keep_input_order(minilm_cross_encoder, pairs):
    one_by_one = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32", max_batch_size=1)
    budgeted = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32", max_batch_tokens=700)
    shuffled = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    np.testing.assert_allclose(budgeted.predict(shuffled), one_by_one.predict(shuffled), atol=1e-4, rtol=0)
    assert budgeted.predict([]).shape == (0,)


def test_bf16_keeps_the_ranking(minilm_cross_encoder, pairs):
    exact = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32")
    fast = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="bfloat16")
    for start in range(0, 120, 40):
        chunk = pairs[start:start + 40]
        a, b = exact.predict(chunk), fast.predict(chunk)
        assert set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5])
        assert np.abs(a - b).max() < 0.05


def test_models_that_cannot_rerank_are_refused(tmp_path, minilm_cross_encoder):
    from rerank.heads import local_minilm_path
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(ModelError, match="BertModel, not a sequence-classification model"):
        CrossEncoder(str(local_minilm_path()))
    with pytest.raises(ModelError, match="no config.json"):
        CrossEncoder(str(tmp_path))
    two_labels = AutoModelForSequenceClassification.from_pretrained(str(minilm_cross_encoder), num_labels=2,
                                                                    ignore_mismatched_sizes=True)
    two_labels.save_pretrained(tmp_path / "two")
    with pytest.raises(ModelError, match="2 labels"):
        CrossEncoder(str(tmp_path / "two"))
    with pytest.raises(ModelError, match="cannot load the model config"):
        CrossEncoder("no-such-owner/no-such-model")


def test_bad_pairs_are_rejected(tiny_cross_encoder):
    model = CrossEncoder(str(tiny_cross_encoder))
    with pytest.raises(TypeError):
        model.predict("a string")
    with pytest.raises(ValueError, match="pair 1"):
        model.predict([("q", "d"), ("only one",)])
    with pytest.raises(ValueError, match="two strings"):
        model.predict([("q", None)])
