"""What makes long inputs cheaper on CPU (issue 14, point 2): SciFact abstracts (BM25 top 100 of SciFact
training queries; most are longer than 256 tokens) reranked at max length 512 by the same model, one
process, one option changed at a time against esrerank's default.

Variants: the token budget of the length-sorted batches (esrerank's default 4,096 tokens; smaller and
larger), fixed batches of 32 pairs as sentence-transformers cuts them (also sorted by length), the eager
attention kernel instead of PyTorch's scaled-dot-product one, and, as costs of a different output, max
length 256 and MaxP windows (every 512-token window of the abstract scored, the best one kept).

For each: pairs/s, tokens computed per pair and the share of them that are not padding, queries whose top 10
is the same list as the default's, and the largest |score difference| from it.

    python -m benchmarks.bench_long_inputs [--queries 3] [--model DIR] [--data ../shared/data/scifact-train]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from benchmarks.bench_cpu_rerankers import TRAINED_MODEL, scifact_set, top10_same_order
from benchmarks.common import SHARED_DATA, best_rate, seeded_minilm, write_json
from rerank.batch_scoring import Batching
from rerank.passages import window_pairs

VARIANTS = {  # name -> (CrossEncoder keyword arguments, attention kernel)
    "default (4,096-token batches, sdpa)": ({}, None),
    "2,048-token batches": ({"batching": Batching(max_batch_tokens=2048)}, None),
    "8,192-token batches": ({"batching": Batching(max_batch_tokens=8192)}, None),
    "16,384-token batches": ({"batching": Batching(max_batch_tokens=16384)}, None),
    "fixed 32-pair batches (as sentence-transformers)": ({"batching": Batching(max_batch_tokens=32 * 512, max_batch_size=32)}, None),
    "eager attention": ({}, "eager"),
    "max length 256": ({"max_length": 256}, None),
    "MaxP windows (all of each abstract)": ({"passages": "maxp"}, None),
}


def computed_tokens(encoder, pairs) -> tuple[float, float]:
    """Tokens the model computes (batch size × longest sequence of the batch, summed over the batches the
    encoder cuts) per pair, and per real token (1.0: no padding). With MaxP the sequences are the windows."""
    sequences = pairs
    if encoder.passages.mode == "maxp":
        sequences, _ = window_pairs(encoder.tokenizer, pairs, encoder.max_length, encoder.passages)
    tokens = encoder._tokenize(sequences)
    batches = encoder.scorer.batches(np.arange(len(tokens)), tokens.lengths)
    computed = sum(len(batch) * int(tokens.lengths[batch[0]]) for batch in batches)
    return computed / len(pairs), computed / int(tokens.lengths.sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--model", default=str(TRAINED_MODEL) if TRAINED_MODEL.is_dir() else None,
                        help="local cross-encoder folder (default: the SciFact-trained MiniLM of runs/, if there)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact-train")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, help="JSON results")
    args = parser.parse_args()
    from rerank.cross_encoder import CrossEncoder

    model = args.model or seeded_minilm("/tmp/minilm-ce-long")
    pairs = scifact_set(args.data, args.queries)
    queries = [q for q, _ in pairs]
    rows, reference = {}, None
    for name, (kwargs, attention) in VARIANTS.items():
        encoder = CrossEncoder(model, show_progress=False, **{"max_length": 512, **kwargs})
        if attention:
            encoder.model.set_attn_implementation(attention)
        rate, scores = best_rate(encoder.predict, pairs, args.repeats)
        reference = scores if reference is None else reference
        same, total = top10_same_order(scores, reference, queries)
        per_pair, per_real = computed_tokens(encoder, pairs)
        rows[name] = {"pairs_per_s": rate, "tokens_per_pair": per_pair, "padding": per_real, "top10_same": same,
                      "queries": total, "max_abs_diff": float(np.abs(scores - reference).max())}
        print(f"{name:<48} {rate:7.2f} pairs/s", file=sys.stderr, flush=True)
    lengths = encoder._tokenize(pairs).lengths  # the last variant's max length is 512
    print(f"\n{len(pairs)} SciFact pairs ({total} queries x BM25 top 100), tokens per pair at max length 512: "
          f"mean {lengths.mean():.0f}, {np.mean(lengths >= 512):.0%} cut at 512")
    print(f"{'variant':<48} {'pairs/s':>8} {'vs default':>11} {'tokens computed/pair':>21} {'of them real':>13} "
          f"{'top-10 same':>12} {'max |Δ|':>9}")
    base = rows["default (4,096-token batches, sdpa)"]["pairs_per_s"]
    for name, row in rows.items():
        print(f"{name:<48} {row['pairs_per_s']:>8.2f} {row['pairs_per_s'] / base:>10.2f}x "
              f"{row['tokens_per_pair']:>21.0f} {1 / row['padding']:>12.1%} "
              f"{row['top10_same']:>8}/{row['queries']:<3} {row['max_abs_diff']:>9.1e}")
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
