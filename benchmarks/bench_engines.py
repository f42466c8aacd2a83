"""Elasticsearch/OpenSearch throughput: esrerank's indexer vs a plain helpers.bulk loop, and batched
_msearch retrieval vs one _search request per query. Needs the servers: `bash .ci/servers.sh start`.

Corpus: 200,000 passages cut from the shared collections (``benchmarks.generators.corpus_100k``), written once to a
BEIR corpus.jsonl in a temporary folder. Each indexer runs in its own child process, so its peak memory
(RSS) is its own; the corpus is streamed from the file by both.

- esrerank: `esrerank index` (2 workers, 1,000 documents a request, no refresh and no replicas during
  the load, merge to one segment at the end, alias swap).
- baseline: the client's `helpers.bulk` over a generator, default chunk size (500), into an index
  created with the same mapping and default settings (refresh every second, one replica).
Both index the same field content: the server's `english` analyzer where it has one (OpenSearch), the
pre-analyzed terms with `whitespace` where it does not (Elasticsearch's integ-test distribution).

    python -m benchmarks.bench_engines [--passages 200000] [--engines elasticsearch opensearch]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, last_json_line, module_command, peak_rss_mb

URLS = {"elasticsearch": "http://127.0.0.1:9200", "opensearch": "http://127.0.0.1:9201"}


def write_corpus(num_passages: int, folder: Path) -> tuple[Path, list[str]]:
    from benchmarks.generators.corpus_100k import passages

    corpus, queries = passages(num_passages)
    path = folder / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for row in corpus:
            handle.write(json.dumps(row) + "\n")
    return path, queries


def baseline_child(engine: str, corpus: Path, index: str) -> dict:
    """helpers.bulk with defaults, in this (child) process."""
    from retrieval.corpus import iter_beir_corpus
    from retrieval.engine_admin import IndexConfig
    from retrieval.engines import connect
    from retrieval.indexing import _source

    searcher = connect(engine, URLS[engine], index)
    settings = searcher.resolve_analysis(IndexConfig())
    body = searcher.index_body(settings, {"analysis": settings.analysis, "analyzer": settings.analyzer,
                                          "k1": settings.k1, "b": settings.b})
    body["settings"] = {"similarity": body["settings"]["similarity"]}  # default refresh and replicas
    searcher.rest.request("PUT", f"/{index}", body=body)
    actions = ({"_index": index, "_id": doc.doc_id, **_source(doc, settings)} for doc in iter_beir_corpus(corpus))
    started = time.perf_counter()
    if engine == "elasticsearch":
        from elasticsearch import helpers
    else:
        from opensearchpy import helpers
    ok, errors = helpers.bulk(searcher.rest.client, actions)
    searcher.rest.request("POST", f"/{index}/_refresh")
    seconds = time.perf_counter() - started
    return {"docs": ok, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=int, default=200_000)
    parser.add_argument("--engines", nargs="+", default=["elasticsearch", "opensearch"])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # engine corpus index
    parser.add_argument("--esrerank-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(baseline_child(args.child[0], Path(args.child[1]), args.child[2])))
        return
    if args.esrerank_child:
        from pipelines.cli import main as cli

        engine, corpus, index = args.esrerank_child
        started = time.perf_counter()
        code = cli(["index", "--data", corpus, "--engine", engine, "--url", URLS[engine], "--index", index, "-q",
                    "--dead-letter", str(Path(corpus).parent / "dead.jsonl")])
        print(json.dumps({"code": code, "seconds": time.perf_counter() - started,
                          "peak_rss_mb": peak_rss_mb()}))
        return

    from retrieval.engines import connect

    with tempfile.TemporaryDirectory() as tmp:
        corpus, queries = write_corpus(args.passages, Path(tmp))
        print(f"{args.passages:,} passages ({corpus.stat().st_size / 1e6:.0f} MB), {len(queries)} queries, top-{args.k}")
        for engine in args.engines:
            searcher = connect(engine, URLS[engine], "bench")
            for name in searcher.list_indices("bench*"):
                searcher.rest.request("DELETE", f"/{name}")
            ours = last_json_line(subprocess.run(module_command(__spec__.name, "--esrerank-child", engine, corpus, "bench"),
                                                 cwd=REPO, capture_output=True, text=True, check=True).stdout)
            base = last_json_line(subprocess.run(module_command(__spec__.name, "--child", engine, corpus, "bench-baseline"),
                                                 cwd=REPO, capture_output=True, text=True, check=True).stdout)
            count = searcher.count()
            assert count == args.passages, count
            ours_rate, base_rate = args.passages / ours["seconds"], base["docs"] / base["seconds"]
            print(f"\n{engine}: {searcher.meta.get('analysis')} analysis, {count:,} documents in the index")
            print(f"  indexing   esrerank {ours_rate:>8.0f} docs/s (peak RSS {ours['peak_rss_mb']:.0f} MB, incl. "
                  f"merge and alias swap)")
            print(f"             helpers.bulk {base_rate:>6.0f} docs/s (peak RSS {base['peak_rss_mb']:.0f} MB)"
                  f"   ratio {ours_rate / base_rate:.2f}x")
            searcher.search_many(queries[:64], args.k)  # warm caches for both
            started = time.perf_counter()
            batched = searcher.search_many(queries, args.k)
            msearch_qps = len(queries) / (time.perf_counter() - started)
            started = time.perf_counter()
            single = [searcher.search_one_request(q, args.k) for q in queries]
            single_qps = len(queries) / (time.perf_counter() - started)
            same = sum([h.doc_id for h in a] == [h.doc_id for h in b] for a, b in zip(batched, single))
            print(f"  retrieval  _msearch {msearch_qps:>8.0f} q/s, one _search per query {single_qps:>6.0f} q/s"
                  f"   ratio {msearch_qps / single_qps:.2f}x (same results for {same}/{len(queries)} queries)")
            for name in searcher.list_indices("bench*"):
                searcher.rest.request("DELETE", f"/{name}")


if __name__ == "__main__":
    main()
