import json

import numpy as np
import pytest
import torch
from run_agreement import assert_probabilities_within_bound, assert_scores_within_bound
from sentence_transformers import CrossEncoder as SentenceTransformersCrossEncoder

from esrerank_errors import ModelError
from rerank.batch_scoring import Batching
from rerank.cross_encoder import CrossEncoder


@pytest.fixture(scope="module")
def pairs(scifact):
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:40]]
    queries = [json.loads(line)["text"] for line in (scifact / "queries.jsonl").read_text().splitlines()[:3]]
    # SciFact abstracts run to several hundred tokens: with max_length 128 most pairs are truncated.
    return [(q, f"{d['title']} {d['text']}") for q in queries for d in docs] + [("short", "pair"), ("", "empty query")]


@pytest.mark.floats
def test_float32_scores_equal_sentence_transformers_including_truncated_pairs(minilm_cross_encoder, pairs):
    ours = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32")
    lengths = [len(ours.tokenizer(q, d)["input_ids"]) for q, d in pairs]
    assert sum(n > 128 for n in lengths) > 50, "the test must include pairs longer than max_length"
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=128,
                                                 activation_fn=torch.nn.Identity())
    expected = reference.predict(pairs, batch_size=16)
    # the same network in other batches (and cut after the first token's last layer): within the bound
    assert_scores_within_bound(ours.predict(pairs), expected)


def test_onnx_runtimes_against_sentence_transformers(minilm_cross_encoder, pairs):
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=128,
                                                 activation_fn=torch.nn.Identity())
    expected = reference.predict(pairs, batch_size=16)
    onnx = CrossEncoder(str(minilm_cross_encoder), max_length=128, runtime="onnx")
    # another runtime's kernels (ONNX Runtime's): close, and not promised to the reproducibility bound
    np.testing.assert_allclose(onnx.predict(pairs), expected, atol=1e-4, rtol=0)
    int8 = CrossEncoder(str(minilm_cross_encoder), max_length=128, runtime="onnx-int8").predict(pairs)
    assert np.isfinite(int8).all() and not np.allclose(int8, expected, atol=1e-4)  # quantized: close, not equal
    assert np.corrcoef(int8, expected)[0, 1] > 0.9
    with pytest.raises(ValueError, match="unknown runtime"):
        CrossEncoder(str(minilm_cross_encoder), runtime="tensorrt")


@pytest.mark.floats
def test_sigmoid_activation_equals_sentence_transformers_default(minilm_cross_encoder, pairs):
    ours = CrossEncoder(str(minilm_cross_encoder), max_length=256, dtype="float32", activation="sigmoid")
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=256)
    logits = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=256,
                                              activation_fn=torch.nn.Identity()).predict(pairs[:30])
    np.testing.assert_allclose(reference.predict(pairs[:30]), 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-7)
    assert_probabilities_within_bound(ours.predict(pairs[:30]), logits)


@pytest.mark.floats
def test_rank_matches_sentence_transformers(minilm_cross_encoder, pairs):
    query, docs = pairs[0][0], [d for _, d in pairs[:40]]
    ours = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32")
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=128,
                                                 activation_fn=torch.nn.Identity())
    ranked = ours.rank(query, docs, top_k=10, return_documents=True)
    expected = reference.rank(query, docs, top_k=10, return_documents=True)
    assert [r["corpus_id"] for r in ranked] == [r["corpus_id"] for r in expected]
    assert all(r["text"] == docs[r["corpus_id"]] for r in ranked)
    assert_scores_within_bound([r["score"] for r in ranked], [r["score"] for r in expected])


@pytest.mark.floats
def test_token_budget_batches_keep_input_order(minilm_cross_encoder, pairs):
    one_by_one = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32",
                              batching=Batching(max_batch_size=1))
    budgeted = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32",
                            batching=Batching(max_batch_tokens=700))
    shuffled = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    alone = one_by_one.predict(shuffled)  # each pair in a batch of its own
    assert_scores_within_bound(budgeted.predict(shuffled), alone)
    ahead = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32",
                         batching=Batching(tokenize_ahead=True, tokenize_chunk=7))  # 19 chunks, the last one short
    assert_scores_within_bound(ahead.predict(shuffled), alone)
    assert budgeted.predict([]).shape == (0,)


def test_bf16_keeps_the_top_10_of_float32(minilm_cross_encoder, pairs):
    exact = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32")
    fast = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="bfloat16")
    plain = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="bfloat16", exact_top_k=None)
    a, b, c = exact.predict(pairs), fast.predict(pairs), plain.predict(pairs)
    assert 0 < np.abs(a - c).max() < 0.05  # bf16 alone: close, not equal
    queries = [q for q, _ in pairs]
    for query in dict.fromkeys(queries):
        rows = np.flatnonzero(np.array(queries) == query)
        assert list(rows[np.argsort(-a[rows], kind="stable")][:10]) == \
            list(rows[np.argsort(-b[rows], kind="stable")][:10])


def test_reduced_precision_scores_do_not_depend_on_earlier_calls(minilm_cross_encoder, pairs):
    # The error bound that decides which pairs are rescored in float32 used to be learnt across calls, so
    # the same pairs scored first and scored again later could come back with different scores (issue 14).
    request, others = pairs[:40], pairs[40:60]
    model = CrossEncoder(str(minilm_cross_encoder), max_length=64, dtype="bfloat16")
    first = model.predict(request)
    model.predict(others)
    model.predict(others[::-1] + request[:5])
    assert np.array_equal(model.predict(request), first)
    warmed_elsewhere = CrossEncoder(str(minilm_cross_encoder), max_length=64, dtype="bfloat16")
    warmed_elsewhere.predict(others)
    assert np.array_equal(warmed_elsewhere.predict(request), first)


def test_each_ranking_learns_its_own_error_bound(minilm_cross_encoder, pairs):
    # Which pairs of a ranking are rescored depends on that ranking's scores only: scored with another
    # ranking in the same call, it gets the float32 scores of the same pairs as when scored alone.
    model = CrossEncoder(str(minilm_cross_encoder), max_length=64, dtype="bfloat16")
    exact = CrossEncoder(str(minilm_cross_encoder), max_length=64, dtype="float32").predict(pairs)
    alone = model.predict(pairs[:40])
    together = model.predict(pairs[:80], rankings=[0] * 40 + [1] * 40)[:40]
    # float32 in torch varies in the last bit with batch shapes, so "the same pairs were rescored" is read
    # as: the pairs within 1e-6 of float32 are the same set
    assert set(np.flatnonzero(np.abs(alone - exact[:40]) < 1e-6)) == \
        set(np.flatnonzero(np.abs(together - exact[:40]) < 1e-6))
    assert np.abs(alone - exact[:40]).max() > 1e-4  # some pairs kept their bf16 scores: the check can fail


def test_rescoring_the_ambiguous_pairs_gives_the_exact_top_k():
    # Oracle: true scores; the reduced-precision ones are off by up to `error`. After replacing the
    # ambiguous pairs' scores by the true ones, each ranking's top k must be the true top k, in order.
    from rerank.precision import ambiguous_pairs

    rng = np.random.default_rng(0)
    rescored_fraction = []
    for trial in range(300):
        n, k, error = int(rng.integers(1, 60)), int(rng.integers(1, 15)), float(rng.choice([0.01, 0.05, 0.2]))
        true = rng.normal(0, 2, size=2 * n)
        reduced = true + rng.uniform(-error, error, size=2 * n)
        groups = {"q1": np.arange(n), "q2": np.arange(n, 2 * n)}
        ambiguous = ambiguous_pairs(groups, reduced, k, error)
        mixed = reduced.copy()
        mixed[ambiguous] = true[ambiguous]
        for rows in groups.values():
            assert list(rows[np.argsort(-mixed[rows])][:k]) == list(rows[np.argsort(-true[rows])][:k]), trial
        rescored_fraction.append(len(ambiguous) / (2 * n))
    assert np.mean(rescored_fraction) < 0.5  # it does not get there by rescoring everything


def test_rankings_label_which_pairs_rank_together(minilm_cross_encoder, pairs):
    # Two queries' 40 documents each, every query's list cut into two rankings of 20 (as two requests of
    # the same query batched together by the service): 4 rankings, where the default grouping (by query
    # text) would see 2. Oracle: sentence-transformers' float32 scores of the same pairs.
    batch = pairs[:80]
    labels = np.array([(i // 40) * 2 + i % 2 for i in range(80)])
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=64,
                                                 activation_fn=torch.nn.Identity())
    expected = reference.predict(batch, batch_size=16)

    def top10(scores, rows):
        return list(rows[np.argsort(-scores[rows], kind="stable")][:10])

    # float32: labels change nothing; every ranking is sentence-transformers' own, order and scores
    exact = CrossEncoder(str(minilm_cross_encoder), max_length=64, dtype="float32").predict(batch, rankings=labels)
    assert_scores_within_bound(exact, expected)
    # bf16: the float32 rescoring works per label, so each of the four rankings gets float32's top 10, in
    # order. Grouped by query text instead (no labels), this data gives one of them a wrong top 10.
    fast = CrossEncoder(str(minilm_cross_encoder), max_length=64, dtype="bfloat16", exact_top_k=10)
    scores = fast.predict(batch, rankings=labels.tolist())
    assert scores.shape == (80,) and scores.dtype == np.float32
    for label in range(4):
        rows = np.flatnonzero(labels == label)
        assert top10(scores, rows) == top10(expected, rows), label
    assert np.abs(scores - expected).max() < 0.01  # bf16's error bound here is under 1e-3
    with pytest.raises(ValueError, match="labels for"):
        fast.predict(pairs[:3], rankings=[0, 1])


def test_models_that_cannot_rerank_are_refused(tmp_path, minilm_cross_encoder):
    from models_support import local_minilm_path
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


def test_cpu_batches_fit_the_token_budget_and_keep_padding_under_a_quarter(tiny_cross_encoder):
    encoder = CrossEncoder(str(tiny_cross_encoder), device="cpu", batching=Batching(max_batch_tokens=400))
    lengths = np.array([50, 100, 74, 90, 80, 75, 20, 19, 15, 16, 14, 13, 12, 11, 10, 9, 8, 8, 8, 8, 8, 8, 8, 8])
    batches = [list(lengths[batch]) for batch in encoder.scorer.batches(np.arange(len(lengths)), lengths)]
    assert batches[:4] == [[100, 90, 80, 75], [74], [50], [20, 19, 16, 15]]
    assert sorted(n for batch in batches for n in batch) == sorted(lengths)  # every pair once
    for batch in batches:
        assert len(batch) * batch[0] <= 400 and 4 * min(batch) >= 3 * batch[0]
