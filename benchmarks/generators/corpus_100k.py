"""A 100,000-passage corpus and ~1,100 real queries for first-stage speed benchmarks.

Passages are random windows of real text (log-normal lengths, median ~55 words, long tail) cut from the
three shared collections, each with its own id; queries are the collections' real queries. Seeded.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from benchmarks.common import SHARED_COLLECTIONS as COLLECTIONS
from benchmarks.common import SHARED_DATA as SHARED


def load_words_and_queries(shared: Path = SHARED) -> tuple[list[str], list[str]]:
    words, queries = [], []
    for name in COLLECTIONS:
        with open(shared / name / "corpus.jsonl", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                words.extend(f"{row['title']} {row['text']}".split())
        with open(shared / name / "queries.jsonl", encoding="utf-8") as handle:
            queries.extend(json.loads(line)["text"] for line in handle)
    return words, queries


def passages(num_passages: int = 100_000, seed: int = 0, shared: Path = SHARED) -> tuple[list[dict], list[str]]:
    words, queries = load_words_and_queries(shared)
    rng = random.Random(seed)
    corpus = []
    for i in range(num_passages):
        length = max(8, min(300, int(rng.lognormvariate(4.0, 0.45))))
        start = rng.randrange(0, len(words) - length)
        corpus.append({"_id": f"p{i}", "title": "", "text": " ".join(words[start:start + length])})
    return corpus, queries
