"""MS MARCO-like (query, passage) pairs built from a shared BEIR collection: queries of ~6 words and
passages of ~60 words with a long tail (log-normal lengths), cut from real abstracts. Seeded."""

from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.common import SHARED_DATA

DEFAULT_DATA = SHARED_DATA / "scifact-train"


def msmarco_like_pairs(num_queries: int = 20, passages_per_query: int = 100, data: Path = DEFAULT_DATA,
                       seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = []
    with open(data / "corpus.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            words.extend(f"{row['title']} {row['text']}".split())
    queries = []
    with open(data / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            queries.append(json.loads(line)["text"].split())
    pairs = []
    for _ in range(num_queries):
        query_words = rng.choice(queries)
        query = " ".join(query_words[: max(3, min(len(query_words), int(rng.gauss(6, 2))))])
        for _ in range(passages_per_query):
            length = max(10, min(400, int(rng.lognormvariate(4.0, 0.45))))  # median ~55, mean ~60, tail to 400
            start = rng.randrange(0, len(words) - length)
            pairs.append((query, " ".join(words[start:start + length])))
    return pairs
