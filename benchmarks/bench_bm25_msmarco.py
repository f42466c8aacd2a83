"""In-memory BM25 at MS MARCO scale: esrerank's InMemoryBM25 against bm25s (numba backend) on the same
collection.tsv and the same real queries, each step in its own process so peak memory is its own.

For each system: build (streamed from the file where the library can: esrerank reads the rows as they
come; bm25s.tokenize takes an iterable of texts) → build time and peak RSS; save → size on disk; then a
fresh process loads the saved index (load time; esrerank memory-maps, bm25s with ``mmap=True``) and
answers the queries, top ``k``, with 1 and with 2 threads (queries/s, query analysis included).
esrerank's top-``k`` lists for a sample of queries are compared with an exact scorer: every posting of
the query's terms scored with numpy in float64 and added into a dense array, then a full sort by
(score desc, position asc).

    python -m benchmarks.bench_bm25_msmarco --data ../data/msmarco-shaped [--k 1000] [--queries 1000]
        [--work /tmp/bench-bm25] [--systems esrerank bm25s-numba]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import time
from pathlib import Path

from benchmarks.common import REPO, last_json_line, module_command, peak_rss_mb, write_json

MEMORY_LIMIT_GB = 21  # keep a runaway build from taking the machine (and its servers) down


def read_queries(data: Path, count: int) -> list[str]:
    with open(data / "queries.tsv", encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t", 1)[1] for line in handle][:count]


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def bm25s_tokenizer():
    import Stemmer

    from retrieval.analysis import ENGLISH_STOP_WORDS

    return Stemmer.Stemmer("porter"), sorted(ENGLISH_STOP_WORDS)


def build(system: str, data: Path, folder: Path) -> dict:
    started = time.perf_counter()
    if system == "esrerank":
        from retrieval.bm25 import InMemoryBM25
        from retrieval.corpus import iter_msmarco_collection

        index = InMemoryBM25(iter_msmarco_collection(data / "collection.tsv"), k1=0.9, b=0.4, scratch_dir=folder.parent)
        build_s = time.perf_counter() - started
        index.save(folder)
        num_docs = len(index)
    else:
        import bm25s

        stemmer, stopwords = bm25s_tokenizer()

        def texts():
            with open(data / "collection.tsv", encoding="utf-8") as handle:
                for line in handle:
                    yield line.rstrip("\n").split("\t", 1)[1]

        tokens = bm25s.tokenize(texts(), stopwords=stopwords, stemmer=stemmer, show_progress=False)
        retriever = bm25s.BM25(k1=0.9, b=0.4, method="lucene", backend="numba")
        retriever.index(tokens, show_progress=False)
        build_s = time.perf_counter() - started
        num_docs = retriever.scores["num_docs"]
        retriever.save(folder)
    return {"build_s": build_s, "build_peak_rss_mb": peak_rss_mb(), "documents": num_docs,
            "index_mb": folder_mb(folder)}


def query(system: str, data: Path, folder: Path, k: int, num_queries: int, threads: int, sample: int) -> dict:
    import numba

    queries = read_queries(data, num_queries)
    numba.set_num_threads(threads)
    started = time.perf_counter()
    if system == "esrerank":
        from retrieval.bm25 import InMemoryBM25

        index = InMemoryBM25.load(folder)
        load_s = time.perf_counter() - started
        index.search_many_arrays(queries[:2], k)  # compile outside the timed region, as a service would
        started = time.perf_counter()
        top = index.search_many_arrays(queries, k)
        query_s = time.perf_counter() - started
        identical = exact_agreement(index, queries[:sample], top, k) if sample else None
    else:
        import bm25s

        stemmer, stopwords = bm25s_tokenizer()
        retriever = bm25s.BM25.load(folder, mmap=True)
        retriever.backend = "numba"
        load_s = time.perf_counter() - started
        warm = bm25s.tokenize(queries[:2], stopwords=stopwords, stemmer=stemmer, show_progress=False)
        retriever.retrieve(warm, k=k, show_progress=False, n_threads=threads)
        started = time.perf_counter()
        tokens = bm25s.tokenize(queries, stopwords=stopwords, stemmer=stemmer, show_progress=False)
        retriever.retrieve(tokens, k=k, show_progress=False, n_threads=threads)
        query_s = time.perf_counter() - started
        identical = None
    return {"threads": threads, "load_s": load_s, "qps": len(queries) / query_s, "queries": len(queries),
            "query_peak_rss_mb": peak_rss_mb(), "identical_top_k": identical}


def exact_agreement(index, queries: list[str], top, k: int) -> str:
    """How many of the sample's top-k lists equal the exact scorer's (same documents, same order)."""
    import numpy as np

    same = 0
    all_lengths = np.asarray(index.doc_lengths, dtype=np.float64)
    avgdl = all_lengths.sum() / np.count_nonzero(all_lengths)
    for q, text in enumerate(queries):
        scores = np.zeros(len(index))
        counts: dict[int, int] = {}
        for term in index.analyzer(text):
            if term in index.vocabulary:
                counts[index.vocabulary[term]] = counts.get(index.vocabulary[term], 0) + 1
        for term, weight in counts.items():
            lo, hi = index.indptr[term], index.indptr[term + 1]
            docs = np.asarray(index.docs[lo:hi])
            tf = np.asarray(index.tfs[lo:hi], dtype=np.float64)
            dl = all_lengths[docs]
            norm = index.k1 * (1 - index.b + index.b * dl / avgdl)
            scores[docs] += weight * (index.idf[term] * tf / (tf + norm))
        matched = np.flatnonzero(scores > 0)
        order = matched[np.lexsort((matched, -scores[matched]))][:k]
        n = int(top.counts[q])
        if n == len(order) and np.array_equal(top.doc_indices[q, :n], order) \
                and np.array_equal(top.scores[q, :n], scores[order]):
            same += 1
    return f"{same}/{len(queries)}"


def child(args) -> None:
    limit = MEMORY_LIMIT_GB * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    folder = args.work / args.system
    if args.step == "build":
        shutil.rmtree(folder, ignore_errors=True)
        result = build(args.system, args.data, folder)
    else:
        result = query(args.system, args.data, folder, args.k, args.queries, args.threads, args.sample)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with collection.tsv and queries.tsv")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=50, help="queries checked against the exact scorer")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-bm25"))
    parser.add_argument("--systems", nargs="+", default=["esrerank", "bm25s-numba"])
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    parser.add_argument("--steps", default="build,query", help="build,query (default) or query: reuse the built indexes")
    parser.add_argument("--system", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--step", choices=["build", "query"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.system:
        child(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for system in args.systems:
        runs = [("build", 1)] * ("build" in args.steps) + [("query", t) for t in (1, 2)]
        results[system] = {}
        for step, threads in runs:
            command = module_command(__spec__.name, "--system", system, "--step", step, "--threads", threads,
                                     "--data", args.data, "--k", args.k, "--queries", args.queries,
                                     "--work", args.work, "--sample", args.sample if threads == 1 else 0)
            out = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
            if out.returncode != 0:
                results[system][f"{step}-{threads}"] = {"failed": out.returncode, "stderr": out.stderr[-800:]}
                print(system, step, "failed:", out.stderr[-800:], flush=True)
                if step == "build":
                    break
                continue
            results[system][f"{step}-{threads}"] = last_json_line(out.stdout)
            print(system, step, threads, results[system][f"{step}-{threads}"], flush=True)
    if args.out:
        write_json(args.out, results)
    print_table(results)


def print_table(results: dict) -> None:
    rows = [("build s", "build-1", "build_s"), ("build peak RSS MB", "build-1", "build_peak_rss_mb"),
            ("index on disk MB", "build-1", "index_mb"), ("load s", "query-1", "load_s"),
            ("queries/s, 1 thread", "query-1", "qps"), ("queries/s, 2 threads", "query-2", "qps"),
            ("query peak RSS MB (1 thread)", "query-1", "query_peak_rss_mb"),
            ("top-k identical to exact", "query-1", "identical_top_k")]
    systems = list(results)
    print(f"{'':<30}" + "".join(f"{s:>16}" for s in systems) + ("   esrerank / bm25s" if len(systems) == 2 else ""))
    for label, run, key in rows:
        values = [results[s].get(run, {}).get(key) for s in systems]
        cells = "".join(f"{v:>16.1f}" if isinstance(v, float) else f"{str(v):>16}" for v in values)
        ratio = ""
        if len(values) == 2 and all(isinstance(v, float) for v in values) and values[1]:
            ratio = f"{values[0] / values[1]:>10.2f}x"
        print(f"{label:<30}{cells}{ratio}")


if __name__ == "__main__":
    main()
