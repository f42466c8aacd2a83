"""Throughput of reranking a run file on Ray against the single-process job, in one run on this machine:
the single-process ``rerank_run_file`` (torch's threads), Ray with one actor of all the CPUs, and Ray with
one actor per CPU. Each Ray pool is started and warmed (the model loaded) before its clock starts; the
per-chunk overhead is the wall time the actors did not spend scoring, per chunk. Prints ratios, and a
projection for N GPU nodes from a per-actor GPU rate (a projection: no GPU cluster measured here).

    python -m benchmarks.bench_ray_rerank [--data ../shared/data/cranfield] [--queries 64] [--depth 100]
        [--gpu-pairs-per-s 4542] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED_DATA, seeded_minilm, write_json
from pipelines.batch_rerank import rerank_run_file
from pipelines.ray_rerank import RayConfig, RayPool, rerank_run_file_on_ray
from pipelines.retrieve_rerank import first_stage_run
from rerank.cross_encoder import CrossEncoder
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_collection

MSMARCO_DEV_PAIRS = 6_980 * 1_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "cranfield"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=8, help="queries a chunk (default 8)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--model", help="cross-encoder folder (default: all-MiniLM-L6-v2 with a seeded head)")
    parser.add_argument("--gpu-pairs-per-s", type=float, default=4542.0,
                        help="one GPU actor's rate for the projection (default 4,542: MiniLM-L6 on one H100, "
                        "docs/batch_rerank.md)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    import ray

    model = args.model or seeded_minilm(Path(tempfile.mkdtemp()) / "minilm-ce")
    options = {"max_length": args.max_length, "dtype": "float32"}
    collection = load_collection(args.data, args.split)
    queries = collection.queries[:args.queries]
    candidates = first_stage_run(InMemoryBM25(collection.documents), queries, args.depth)
    texts = collection.texts()
    pairs = sum(len(hits) for hits in candidates.values())
    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp())
    figures = {"collection": collection.name, "queries": len(queries), "depth": args.depth, "pairs": pairs,
               "chunk_queries": args.chunk, "max_length": args.max_length, "cpus": cpus, "routes": {}}

    reranker = CrossEncoder(model, show_progress=False, **options)
    reranker.predict([("warm", "up")])
    started = time.perf_counter()
    rerank_run_file(queries, candidates, texts, reranker, work / "single.run", queries_per_chunk=args.chunk,
                    show_progress=False)
    single = time.perf_counter() - started
    figures["routes"]["single process"] = {"seconds": single, "pairs_per_s": pairs / single}
    del reranker

    ray.init(num_cpus=cpus, logging_level=logging.WARNING, log_to_driver=False)
    try:
        for name, actors, cpus_each in (("Ray, 1 actor", 1, cpus), (f"Ray, {cpus} actors", cpus, 1)):
            pool = RayPool(model, options, RayConfig(actors=actors, cpus_per_actor=cpus_each))
            load_started = time.perf_counter()
            list(pool.score([(i, [queries[0]], [candidates[queries[0].query_id][:1]]) for i in range(actors)],
                            texts))  # every actor loads the model before the clock starts
            load = time.perf_counter() - load_started
            pool.stats.chunks, pool.stats.actor_seconds = 0, 0.0
            started = time.perf_counter()
            rerank_run_file_on_ray(queries, candidates, texts, model, work / f"{actors}.run", options,
                                   queries_per_chunk=args.chunk, show_progress=False, pool=pool)
            seconds = time.perf_counter() - started
            pool.close()
            same = (work / f"{actors}.run").read_bytes() == (work / "single.run").read_bytes()
            overhead = (seconds * actors - pool.stats.actor_seconds) / pool.stats.chunks
            figures["routes"][name] = {
                "seconds": seconds, "pairs_per_s": pairs / seconds, "over_single": single / seconds,
                "actor_seconds": pool.stats.actor_seconds, "chunks": pool.stats.chunks,
                "overhead_s_per_chunk": overhead, "start_and_load_s": load, "same_output": same,
                "per_actor_pairs_per_s": pairs / pool.stats.actor_seconds}
    finally:
        ray.shutdown()

    print(f"{collection.name}: {len(queries)} queries × BM25 top {args.depth} = {pairs} pairs, chunks of "
          f"{args.chunk} queries, MiniLM-L6 max length {args.max_length}, float32, {cpus} CPUs")
    print(f"{'route':<18} {'seconds':>8} {'pairs/s':>8} {'× single':>9} {'overhead s/chunk':>17} {'same output':>12}")
    for name, row in figures["routes"].items():
        print(f"{name:<18} {row['seconds']:>8.1f} {row['pairs_per_s']:>8.1f} {row.get('over_single', 1.0):>9.2f} "
              f"{row.get('overhead_s_per_chunk', 0.0):>17.3f} {str(row.get('same_output', True)):>12}")
    overhead = max(row.get("overhead_s_per_chunk", 0.0) for row in figures["routes"].values())
    chunk_pairs = 32 * 1000  # the default chunk at MS MARCO depth
    chunk_s = chunk_pairs / args.gpu_pairs_per_s
    efficiency = chunk_s / (chunk_s + overhead)
    figures["projection"] = {"gpu_pairs_per_s_per_actor": args.gpu_pairs_per_s, "overhead_s_per_chunk": overhead,
                             "efficiency_at_32k_pair_chunks": efficiency, "msmarco_dev_minutes": {}}
    print(f"projection (not measured): MS MARCO dev, {MSMARCO_DEV_PAIRS:,} pairs, one GPU actor at "
          f"{args.gpu_pairs_per_s:,.0f} pairs/s, chunks of 32 × 1,000 pairs ({chunk_s:.1f} s each) plus the "
          f"measured {overhead:.3f} s overhead a chunk ({efficiency:.1%} busy):")
    for nodes in (1, 2, 4, 8, 16):
        minutes = MSMARCO_DEV_PAIRS / (nodes * args.gpu_pairs_per_s * efficiency) / 60
        figures["projection"]["msmarco_dev_minutes"][nodes] = minutes
        print(f"  {nodes:>2} GPU nodes: {minutes:6.1f} min")
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
