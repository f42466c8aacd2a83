"""Flat tokenization and padded batches against the tokenizer's own call and a row-by-row padding."""

import numpy as np
import pytest

from rerank.tokens import TokenizedPairs, tokenize_pairs

PAIRS = [
    ("what is bm25", "BM25 is a bag-of-words ranking function used by search engines."),
    ("", "an empty query"),
    ("an empty document", ""),
    ("a long query " * 40, "a short document"),
    ("short", "a very long document about retrieval " * 60),
    ("unicode: naïve café ß 中文 😀", "Ünïcödé text, with punctuation!?… and\ttabs\nnewlines"),
    ("both long " * 50, "and long " * 80),
]


@pytest.fixture(scope="module")
def tokenizer(tiny_cross_encoder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_cross_encoder))


@pytest.mark.parametrize("max_length", [16, 64, 512])
def test_flat_tokens_equal_the_tokenizer_call(tokenizer, max_length):
    tokens = tokenize_pairs(tokenizer, PAIRS, max_length, with_types=True)
    expected = tokenizer([q for q, _ in PAIRS], [d for _, d in PAIRS], truncation="longest_first",
                         max_length=max_length, return_token_type_ids=True)
    assert tokenizer.is_fast and len(tokens) == len(PAIRS)
    for i in range(len(PAIRS)):
        span = slice(tokens.starts[i], tokens.starts[i] + tokens.lengths[i])
        assert tokens.ids[span].tolist() == expected["input_ids"][i]
        assert tokens.types[span].tolist() == expected["token_type_ids"][i]
    assert tokens.lengths.max() <= max_length


def test_padded_batches_equal_row_by_row_padding(tokenizer):
    first = tokenize_pairs(tokenizer, PAIRS[:3], 64, with_types=True)
    second = tokenize_pairs(tokenizer, PAIRS[3:], 64, with_types=True)
    tokens = TokenizedPairs.concatenate([first, second])
    rows = np.array([6, 0, 4, 2])
    width = int(tokens.lengths[rows].max()) + 3
    batch = tokens.padded(rows, width, pad_id=7)
    for row, i in enumerate(rows):
        ids = tokens.ids[tokens.starts[i]:tokens.starts[i] + tokens.lengths[i]]
        n = len(ids)
        assert batch["input_ids"][row].tolist() == ids.tolist() + [7] * (width - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        types = tokens.types[tokens.starts[i]:tokens.starts[i] + n]
        assert batch["token_type_ids"][row].tolist() == types.tolist() + [0] * (width - n)
    assert tokenize_pairs(tokenizer, PAIRS, 64, with_types=False).types is None
