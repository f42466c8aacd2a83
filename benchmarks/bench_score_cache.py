"""Whether a persistent score cache pays (rerank/score_cache.py): the same evaluation reranked without a
cache, then with one that starts empty (the cost of writing it), deeper (half the pairs cached: a deeper first
stage) and again with fusion (every pair cached: another fusion setting). One run, this machine.

    python -m benchmarks.bench_score_cache [--data ../shared/data/cranfield] [--queries 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED_DATA, seeded_minilm, write_json
from pipelines.retrieve_rerank import RerankConfig, first_stage_run, rerank_run
from rerank.cross_encoder import CrossEncoder
from rerank.score_cache import ScoreCache
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "cranfield"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    model = CrossEncoder(seeded_minilm(Path(tempfile.mkdtemp()) / "minilm-ce"), max_length=args.max_length,
                         dtype="float32", show_progress=False)
    model.predict([("warm", "up")])
    collection = load_collection(args.data, args.split)
    queries = collection.queries[:args.queries]
    candidates = first_stage_run(InMemoryBM25(collection.documents), queries, args.depth)
    texts = collection.texts()
    cache = ScoreCache(Path(tempfile.mkdtemp()) / "scores.sqlite", model)
    half = args.depth // 2
    steps = [("no cache, top %d" % half, model, RerankConfig(rerank_k=half)),
             ("no cache, top %d" % args.depth, model, RerankConfig(rerank_k=args.depth)),
             ("cache empty, top %d" % half, cache, RerankConfig(rerank_k=half)),
             ("cache, top %d (half cached)" % args.depth, cache, RerankConfig(rerank_k=args.depth)),
             ("cache, top %d + fusion (all cached)" % args.depth, cache,
              RerankConfig(rerank_k=args.depth, fusion="interpolate"))]
    figures, runs = {"queries": len(queries), "depth": args.depth, "steps": {}}, {}
    print(f"{collection.name}: {len(queries)} queries, BM25 top {args.depth}, MiniLM-L6 max length "
          f"{args.max_length}, float32")
    print(f"{'step':<40} {'pairs':>6} {'cached':>7} {'seconds':>8} {'ms/pair':>8}")
    for name, reranker, config in steps:
        hits_before = cache.hits
        started = time.perf_counter()
        runs[name] = rerank_run(queries, candidates, reranker, texts, config, show_progress=False)
        seconds = time.perf_counter() - started
        pairs = len(queries) * config.rerank_k
        cached = cache.hits - hits_before
        figures["steps"][name] = {"pairs": pairs, "cached": cached, "seconds": seconds}
        print(f"{name:<40} {pairs:>6} {cached:>7} {seconds:>8.2f} {1000 * seconds / pairs:>8.3f}")
    plain, cached = runs["no cache, top %d" % args.depth], runs["cache, top %d (half cached)" % args.depth]
    difference = max(abs(a.score - b.score) for q in queries for a, b in zip(plain[q.query_id], cached[q.query_id]))
    same_order = all([h.doc_id for h in plain[q.query_id]] == [h.doc_id for h in cached[q.query_id]] for q in queries)
    figures["cached_vs_plain"] = {"max_abs_score_difference": difference, "same_order": same_order}
    full = figures["steps"]["no cache, top %d" % args.depth]["seconds"]
    for name in list(figures["steps"])[2:]:
        figures["steps"][name]["vs_no_cache_same_depth"] = (
            figures["steps"][name]["seconds"] / figures["steps"]["no cache, top %d" % (
                half if "empty" in name else args.depth)]["seconds"])
    print(f"half cached / no cache at top {args.depth}: "
          f"{figures['steps']['cache, top %d (half cached)' % args.depth]['seconds'] / full:.2f}x; all cached: "
          f"{figures['steps']['cache, top %d + fusion (all cached)' % args.depth]['seconds'] / full:.4f}x; "
          f"writing an empty cache: {figures['steps']['cache empty, top %d' % half]['vs_no_cache_same_depth']:.2f}x")
    print(f"cached run vs plain: same order {same_order}, largest score difference {difference:.2e}")
    figures["lookup_ms_per_pair"] = 1000 * figures["steps"]["cache, top %d + fusion (all cached)" % args.depth][
        "seconds"] / (len(queries) * args.depth)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
