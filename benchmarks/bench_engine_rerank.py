"""Latency per query: reranking inside the engine vs esrerank's client-side pipeline (BM25 from the engine,
then the cross-encoder in this process). Same index, same BM25 window, same model, one query at a time; both
top 10s are compared for every query.

- ``--engine opensearch``: a search pipeline's ``rerank`` processor calls ``esrerank serve`` (the
  ML-enabled OpenSearch: ``bash .ci/servers.sh start opensearch-ml``, port 9202).
- ``--engine elasticsearch``: esrerank's rescorer plugin calls it from every shard (``bash .ci/servers.sh start
  elasticsearch``, port 9200, which points the plugin at 127.0.0.1:9290 with the key in its keystore).

The service runs as its own process (``esrerank serve``, as it would on a GPU host); the client-side
pipeline loads the same model here. Model: a local cross-encoder folder, by default all-MiniLM-L6-v2 with a
seeded head.

    python -m benchmarks.bench_engine_rerank [--engine elasticsearch] [--data ../shared/data/vaswani]
        [--windows 20,100] [--max-length 256]
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
from retrieval.engines import connect
from retrieval.indexing import build_index

ENGINES = {  # engine → (default URL, the service port the engine calls, the API key it sends)
    "opensearch": ("http://127.0.0.1:9202", 8791, "bench-key"),
    # .ci/servers.sh starts Elasticsearch with esrerank.service.url on this port and this key in its keystore
    "elasticsearch": ("http://127.0.0.1:9200", int(os.environ.get("ESRERANK_RESCORE_PORT", "9290")),
                      os.environ.get("ESRERANK_RESCORE_API_KEY", "esrerank-ci-key")),
}


def timed(search, queries):
    seconds, results = [], []
    for query in queries:
        started = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - started)
    return np.array(seconds), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", choices=list(ENGINES), default="opensearch")
    parser.add_argument("--data", default=str(SHARED_DATA / "vaswani"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--url", help="the engine (default: the one .ci/servers.sh starts for --engine)")
    parser.add_argument("--index", default="esrerank-bench-engine-rerank")
    parser.add_argument("--model", help="cross-encoder folder (default: all-MiniLM-L6-v2 with a seeded head)")
    parser.add_argument("--windows", default="20", help="BM25 hits reranked per query, comma-separated (default 20)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    default_url, port, api_key = ENGINES[args.engine]
    url = args.url or default_url
    windows = [int(w) for w in args.windows.split(",")]

    model_dir = args.model
    if model_dir is None:
        model_dir = seeded_minilm(Path(tempfile.mkdtemp()) / "minilm-ce")
    collection = load_collection(args.data, args.split)
    bm25 = connect(args.engine, url, args.index)
    if not bm25.exists(args.index) or bm25.count() != len(collection.documents):
        build_index(bm25, iter(collection.documents), args.index, f"{collection.name}-bench", IndexConfig(),
                    show_progress=False)
    service = start_serve(model_dir, port, "--max-length", args.max_length, "--dtype", "float32",
                          env={**os.environ, "ESRERANK_API_KEY": api_key})
    figures = {"engine": args.engine, "collection": collection.name, "max_length": args.max_length, "windows": {}}
    try:
        if args.engine == "opensearch":
            registration = register_opensearch(rest_client("opensearch", url), f"http://127.0.0.1:{port}",
                                               name="esrerank-bench", api_key=api_key)
            in_engine = connect("opensearch", url, args.index, search_pipeline=registration.pipeline)
            route = "inside OpenSearch (search pipeline)"
        else:
            in_engine = connect("elasticsearch", url, args.index, rescore="esrerank")
            route = "inside Elasticsearch (esrerank rescorer)"
        texts = [q.text for q in collection.queries]
        model = CrossEncoder(model_dir, max_length=args.max_length, dtype="float32")
        for window in windows:
            client = RetrieveRerank(bm25, model, retrieve_k=window, rerank_k=window)
            engine = RetrieveRerank(bm25, EngineReranker(in_engine), retrieve_k=window, rerank_k=window)
            for warm in texts[:3]:
                client.search(warm), engine.search(warm)
            client_seconds, client_hits = timed(client.search, texts)
            engine_seconds, engine_hits = timed(engine.search, texts)
            routes = [("client-side (RetrieveRerank)", client_seconds), (route + ", esrerank API", engine_seconds)]
            same_top10 = sum([h.doc_id for h in a[:10]] == [h.doc_id for h in b[:10]]
                             for a, b in zip(client_hits, engine_hits))
            row = {"queries": len(texts), "same_top10_queries": same_top10}
            print(f"{collection.name}: {len(texts)} queries one at a time, BM25 window {window}, max length "
                  f"{args.max_length}; same top 10 for {same_top10}/{len(texts)} queries")
            if args.engine == "elasticsearch" and bm25.primary_shards(args.index) == 1:
                # what an application sends: one search with the rescore section (esrerank's API searches
                # twice: the first stage, then the head again restricted to its ids)
                direct_seconds, direct_hits = timed(lambda text: in_engine.search(text, window), texts)
                routes.append((route + ", one _search", direct_seconds))
                row["same_top10_queries_one_search"] = sum([h.doc_id for h in a[:10]] == [h.doc_id for h in b[:10]]
                                                           for a, b in zip(client_hits, direct_hits))
                print(f"one _search with rescore: same top 10 for {row['same_top10_queries_one_search']}/"
                      f"{len(texts)} queries")
            print(f"{'route':<56} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
            for name, seconds in routes:
                p50, p99, mean = (1000 * float(v) for v in (np.percentile(seconds, 50), np.percentile(seconds, 99),
                                                            seconds.mean()))
                row[name] = {"p50_ms": p50, "p99_ms": p99, "mean_ms": mean}
                print(f"{name:<56} {p50:>8.1f} {p99:>8.1f} {mean:>8.1f}")
                if seconds is not client_seconds:
                    ratio = float(np.median(seconds) / np.median(client_seconds))
                    row[name]["p50_over_client_side"] = ratio
                    print(f"{'':<56} p50 / client-side: {ratio:.2f}x")
            figures["windows"][str(window)] = row
    finally:
        service.terminate()
        service.wait(timeout=30)
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()
