"""A seeded stand-in for the MS MARCO passage corpus, written in its official format.

The real collection (8,841,823 passages) cannot be downloaded on the machines this project is built on,
so the MS MARCO-scale benchmarks run on text of the same shape instead:

- ``collection.tsv``: ``pid<TAB>passage``, pids 0..N-1, as MS MARCO ships it (and ``esrerank index``,
  ``InMemoryBM25.from_msmarco_tsv`` and bm25s read it);
- passage lengths log-normal with MS MARCO's mean of ~56 words and a long tail (clipped to 2..362 words,
  MS MARCO's range);
- words drawn from a Zipf-Mandelbrot distribution over the real words of the three shared collections
  (scifact-train, vaswani, cranfield), most frequent words first, so posting-list lengths follow the
  skew of real text (a few huge lists, a long tail of short ones);
- ``queries.tsv``: the shared collections' 1,127 real queries (``qid<TAB>text``).

What it does not have: MS MARCO's 2.6M-term vocabulary (this one has the shared collections' ~100k
words), sentences, and relevance judgements. Speeds and memory are what it is for.

    python -m benchmarks.generators.msmarco_shaped --out ../data/msmarco-shaped [--passages 8841823] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_COLLECTIONS as COLLECTIONS
from benchmarks.common import SHARED_DATA as SHARED

MSMARCO_PASSAGES = 8_841_823
MEAN_WORDS, SIGMA = 56.5, 0.55
MIN_WORDS, MAX_WORDS = 2, 362


def vocabulary(shared: Path = SHARED) -> tuple[list[str], np.ndarray]:
    """The shared collections' words, most frequent first, and Zipf-Mandelbrot probabilities for them."""
    counts: Counter[str] = Counter()
    for name in COLLECTIONS:
        with open(shared / name / "corpus.jsonl", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                counts.update(f"{row['title']} {row['text']}".split())
    words = [word for word, _ in counts.most_common()]
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    weights = 1.0 / (ranks + 2.7) ** 1.0  # Mandelbrot's q = 2.7, s = 1: the head of English text
    return words, weights / weights.sum()


def real_queries(shared: Path = SHARED) -> list[str]:
    queries = []
    for name in COLLECTIONS:
        with open(shared / name / "queries.jsonl", encoding="utf-8") as handle:
            queries.extend(" ".join(json.loads(line)["text"].split()) for line in handle)
    return queries


def write_collection(out: Path, num_passages: int = MSMARCO_PASSAGES, seed: int = 0,
                     chunk: int = 200_000) -> None:
    out.mkdir(parents=True, exist_ok=True)
    words, probabilities = vocabulary()
    word_array = np.array(words, dtype=object)
    cumulative = np.cumsum(probabilities)
    rng = np.random.default_rng(seed)
    mu = np.log(MEAN_WORDS) - SIGMA**2 / 2
    started, written_words = time.perf_counter(), 0
    partial = out / "collection.tsv.partial"
    with open(partial, "w", encoding="utf-8", newline="\n") as handle:
        for first in range(0, num_passages, chunk):
            count = min(chunk, num_passages - first)
            lengths = np.clip(rng.lognormal(mu, SIGMA, count).astype(np.int64), MIN_WORDS, MAX_WORDS)
            picks = np.searchsorted(cumulative, rng.random(int(lengths.sum())), side="right")
            tokens = word_array[np.minimum(picks, len(words) - 1)].tolist()
            ends = np.cumsum(lengths).tolist()
            start, lines = 0, []
            for pid, end in zip(range(first, first + count), ends):
                lines.append(f"{pid}\t{' '.join(tokens[start:end])}\n")
                start = end
            handle.write("".join(lines))
            written_words += len(tokens)
            print(f"\r{first + count:,} passages", end="", flush=True)
    partial.rename(out / "collection.tsv")
    with open(out / "queries.tsv", "w", encoding="utf-8", newline="\n") as handle:
        handle.writelines(f"{qid}\t{text}\n" for qid, text in enumerate(real_queries()))
    (out / "README.json").write_text(json.dumps({
        "what": "MS MARCO-shaped stand-in written by benchmarks/generators/msmarco_shaped.py", "passages": num_passages,
        "seed": seed, "vocabulary": len(words), "mean_words": written_words / num_passages}, indent=2))
    print(f"\nwrote {num_passages:,} passages ({written_words / num_passages:.1f} words on average, "
          f"{len(words):,}-word vocabulary) to {out} in {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for collection.tsv and queries.tsv")
    parser.add_argument("--passages", type=int, default=MSMARCO_PASSAGES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_collection(args.out, args.passages, args.seed)


if __name__ == "__main__":
    main()
