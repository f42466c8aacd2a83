"""Latency per query: reranking inside OpenSearch (search pipeline → `esrerank serve`) vs esrerank's
client-side pipeline (BM25 from the engine, then the cross-encoder in this process). Same index, same
BM25 window, same model, one query at a time; both top 10s are compared for every query.

Needs the ML-enabled OpenSearch (`bash .ci/servers.sh start opensearch-ml`, port 9202). The service runs
as its own process (`esrerank serve`, as it would on a GPU host); the client-side pipeline loads the
same model here. Model: a local cross-encoder folder, by default all-MiniLM-L6-v2 with a seeded head.

    python -m benchmarks.bench_engine_rerank [--data ../shared/data/vaswani] [--window 20] [--max-length 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA, seeded_minilm, start_serve, write_json
from pipelines.engine_rerank import register_opensearch
from pipelines.retrieve_rerank import EngineReranker, RetrieveRerank
from rerank.cross_encoder import CrossEncoder
from retrieval.corpus import load_collection
from retrieval.engine_admin import IndexConfig
from retrieval.engine_rest import rest_client
from retrieval.engines import OpenSearchBM25
from retrieval.indexing import build_index


def timed(search, queries):
    seconds, results = [], []
    for query in queries:
        started = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - started)
    return np.array(seconds), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SHARED_DATA / "vaswani"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--url", default="http://127.0.0.1:9202")
    parser.add_argument("--index", default="esrerank-bench-engine-rerank")
    parser.add_argument("--model", help="cross-encoder folder (default: all-MiniLM-L6-v2 with a seeded head)")
    parser.add_argument("--window", type=int, default=20, help="BM25 hits reranked per query (default 20)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()

    model_dir = args.model
    if model_dir is None:
        model_dir = seeded_minilm(Path(tempfile.mkdtemp()) / "minilm-ce")
    collection = load_collection(args.data, args.split)
    bm25 = OpenSearchBM25(args.url, args.index)
    if not bm25.exists(args.index) or bm25.count() != len(collection.documents):
        build_index(bm25, iter(collection.documents), args.index, f"{collection.name}-bench", IndexConfig(),
                    show_progress=False)
    service = start_serve(model_dir, args.port, "--max-length", args.max_length, "--dtype", "float32",
                          env={**os.environ, "ESRERANK_API_KEY": "bench-key"})
    try:
        registration = register_opensearch(rest_client("opensearch", args.url), f"http://127.0.0.1:{args.port}",
                                           name="esrerank-bench", api_key="bench-key")
        queries = collection.queries
        texts = [q.text for q in queries]
        model = CrossEncoder(model_dir, max_length=args.max_length, dtype="float32")
        client = RetrieveRerank(bm25, model, retrieve_k=args.window, rerank_k=args.window)
        engine = RetrieveRerank(bm25, EngineReranker(OpenSearchBM25(args.url, args.index,
                                                                    search_pipeline=registration.pipeline)),
                                retrieve_k=args.window, rerank_k=args.window)
        for warm in texts[:3]:
            client.search(warm), engine.search(warm)
        client_seconds, client_hits = timed(client.search, texts)
        engine_seconds, engine_hits = timed(engine.search, texts)
    finally:
        service.terminate()
        service.wait(timeout=30)
    same_top10 = sum([h.doc_id for h in a[:10]] == [h.doc_id for h in b[:10]] for a, b in zip(client_hits, engine_hits))
    figures = {"collection": collection.name, "queries": len(texts), "window": args.window,
               "max_length": args.max_length, "same_top10_queries": same_top10}
    print(f"{collection.name}: {len(texts)} queries one at a time, BM25 window {args.window}, max length "
          f"{args.max_length}; same top 10 for {same_top10}/{len(texts)} queries")
    print(f"{'route':<36} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, seconds in (("client-side (RetrieveRerank)", client_seconds),
                          ("inside OpenSearch (search pipeline)", engine_seconds)):
        p50, p99, mean = (1000 * float(v) for v in (np.percentile(seconds, 50), np.percentile(seconds, 99),
                                                    seconds.mean()))
        figures[name] = {"p50_ms": p50, "p99_ms": p99, "mean_ms": mean}
        print(f"{name:<36} {p50:>8.1f} {p99:>8.1f} {mean:>8.1f}")
    ratio = float(np.median(engine_seconds) / np.median(client_seconds))
    figures["engine_over_client_p50"] = ratio
    print(f"p50 inside the engine / client-side: {ratio:.2f}x")
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
