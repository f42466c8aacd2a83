"""In-memory BM25 speed: esrerank's fast backend vs rank-bm25 and bm25s (numpy and numba backends).

Each system runs in its own child process (so peak memory is its own) on the same 100k-passage corpus
and the same ~1,100 real queries, top-100; rank-bm25 answers a 50-query sample (it takes ~0.2 s a query). One thread each
(bm25s n_threads=1), plus esrerank and bm25s-numba on both cores.
Query time includes analyzing the queries. Prints queries/s, index time, peak RSS, and ratios. bm25s returns arrays of
corpus positions; 'bm25s-numba+hits' also builds the (doc id, score, rank) records esrerank's search_many returns,
and 'esrerank-fast-arrays' is search_many_arrays, which returns arrays as bm25s does.

    python -m benchmarks.bench_bm25 [--passages 100000] [--k 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time

from benchmarks.common import REPO, last_json_line, module_command, peak_rss_mb

SYSTEMS = ("esrerank-fast", "esrerank-fast-arrays", "esrerank-fast-2threads", "esrerank-fast-arrays-2threads", "bm25s-numpy", "bm25s-numba", "bm25s-numba+hits",
           "bm25s-numba-2threads", "rank-bm25")


def run_system(system: str, num_passages: int, k: int) -> dict:
    from benchmarks.generators.corpus_100k import passages
    from retrieval.analysis import ENGLISH_STOP_WORDS, english_analyzer

    corpus, queries = passages(num_passages)
    baseline_mb = peak_rss_mb()
    import numpy as np

    if system == "rank-bm25":
        queries = queries[:50]
    started = time.perf_counter()
    if system.startswith("esrerank-fast"):
        import numba

        from retrieval.bm25 import InMemoryBM25

        numba.set_num_threads(2 if system.endswith("2threads") else 1)
        index = InMemoryBM25(corpus, k1=0.9, b=0.4, show_progress=False)
        search = index.search_many_arrays if "arrays" in system else index.search_many
        search(queries[:4], k)  # load the compiled kernel outside the timed region
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        search(queries, k)
    elif system.startswith("bm25s"):
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("porter")
        stopwords = sorted(ENGLISH_STOP_WORDS)
        backend = system.split("-")[1].removesuffix("+hits")
        threads = 2 if system.endswith("2threads") else 1
        retriever = bm25s.BM25(k1=0.9, b=0.4, method="lucene", backend=backend)
        retriever.index(bm25s.tokenize([d["text"] for d in corpus], stopwords=stopwords, stemmer=stemmer,
                                       show_progress=False), show_progress=False)
        if backend == "numba":  # compile outside the timed region, as a long-running service would
            retriever.retrieve(bm25s.tokenize(queries[:4], stopwords=stopwords, stemmer=stemmer, show_progress=False),
                               k=k, show_progress=False, n_threads=threads)
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        tokens = bm25s.tokenize(queries, stopwords=stopwords, stemmer=stemmer, show_progress=False)
        docs, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=threads)
        if system.endswith("+hits"):  # the same output as esrerank's: (doc id, score, rank) records per query
            from retrieval.records import Hit

            ids = np.array([d["_id"] for d in corpus], dtype=object)[docs].tolist()
            [list(map(Hit._make, zip(i, s, range(1, k + 1)))) for i, s in zip(ids, scores.tolist())]
    else:
        from rank_bm25 import BM25Okapi

        model = BM25Okapi([english_analyzer(d["text"]) for d in corpus], k1=0.9, b=0.4)
        index_s = time.perf_counter() - started
        started = time.perf_counter()
        for query in queries:
            scores = model.get_scores(english_analyzer(query))
            np.argpartition(-scores, k)[:k]
    query_s = time.perf_counter() - started
    return {"system": system, "queries": len(queries), "qps": len(queries) / query_s, "index_s": index_s,
            "peak_rss_mb": peak_rss_mb(), "rss_before_index_mb": baseline_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--system", choices=SYSTEMS, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.system:
        print(json.dumps(run_system(args.system, args.passages, args.k)))
        return
    results = {}
    for system in SYSTEMS:
        out = subprocess.run(module_command(__spec__.name, "--system", system, "--passages", args.passages,
                                            "--k", args.k), cwd=REPO, capture_output=True, text=True, check=True)
        results[system] = last_json_line(out.stdout)
    ours = results["esrerank-fast"]["qps"]
    print(f"{args.passages:,} passages, top-{args.k}; query time includes query analysis; single thread unless named")
    print(f"{'system':<30} {'queries/s':>10} {'esrerank x':>11} {'index s':>8} {'peak RSS MB':>12} {'RSS before index':>17}")
    for r in results.values():
        print(f"{r['system']:<30} {r['qps']:>10.1f} {ours / r['qps']:>11.2f} {r['index_s']:>8.1f} "
              f"{r['peak_rss_mb']:>12.0f} {r['rss_before_index_mb']:>17.0f}")


if __name__ == "__main__":
    main()
