"""How far one reranking job's scores move between the ways esrerank can run it: the measurement behind the
reproducibility promise (docs/batch_rerank.md "Reproducibility", ``rerank.reproducibility``).

One job: a collection's BM25 top ``--depth`` for every query, reranked by all-MiniLM-L6-v2 with a seeded head
(the shape of ms-marco-MiniLM-L6-v2) in float32. Each route runs the real command a user would
(``esrerank rerank …`` in its own process; the service through HTTP), and its run file is compared with the
reference, ``rerank --threads 1``:

- ``threads-2``: ``rerank --threads 2`` (same chunks, another thread count);
- ``ray``: ``rerank --ray`` on this machine, two actors of one thread (same chunks, other processes);
- ``devices``: ``rerank --devices cpu,cpu`` (one process per device, each every other query: other chunks);
- ``cache-half``: ``rerank --score-cache`` after every other query's pairs were cached by an earlier job (the
  cached scores come from other batches);
- ``service``: ``esrerank serve`` answering ``POST /v1/rerank`` (raw scores) from 4 concurrent clients, a query
  a request (its dynamic batching mixes queries);
- ``avx2-threads-1``, ``avx2-threads-2``: ``rerank`` with torch's kernels held to AVX2
  (``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``): another CPU
  kind's code paths on this CPU, as a job resumed on another machine would mix.

For each: byte-equal or not, the largest absolute score difference, the largest relative to max(1, |score|),
queries whose order differs, and adjacent pairs reordered although their reference scores were more than
2 × the bound apart (what the promise rules out: each score moves at most the bound).

    python -m benchmarks.bench_reproducibility --out benchmarks/results/reproducibility.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.common import REPO, SHARED_DATA, machine, module_command, seeded_minilm, start_serve, write_json

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _esrerank(*args, env: dict | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(module_command("pipelines.cli", *args), cwd=REPO, check=True, env={**os.environ, **(env or {})},
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _service_run(model: str, queries: dict[str, str], candidates, texts, out: Path, common: list[str]) -> float:
    """Every query's candidates scored by ``esrerank serve`` (raw logits), 4 clients at once; written as a run."""
    from pipelines.runs import write_trec_run
    from retrieval.records import Hit

    port = 18000 + os.getpid() % 1000
    process = start_serve(model, port, *common)
    started = time.perf_counter()
    try:
        answers: dict[str, list[Hit]] = {}
        pending = list(candidates)
        lock = threading.Lock()

        def client():
            while True:
                with lock:
                    if not pending:
                        return
                    query_id = pending.pop(0)
                hits = candidates[query_id]
                body = json.dumps({"query": queries[query_id], "documents": [texts[h.doc_id] for h in hits],
                                   "raw_scores": True}).encode()
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/rerank", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=600) as response:
                    results = json.loads(response.read())["results"]
                scores = {r["index"]: r["relevance_score"] for r in results}
                # best first, ties in first-stage order: what rerank_run does
                order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
                answers[query_id] = [Hit(hits[i].doc_id, scores[i], rank) for rank, i in enumerate(order, 1)]

        workers = [threading.Thread(target=client) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        process.terminate()
        process.wait(timeout=60)
    write_trec_run({q: answers[q] for q in candidates}, out)
    return time.perf_counter() - started


def scale_head(folder: str, factor: float) -> None:
    """Multiply the classification head's weights and bias by ``factor``: logits spread like a trained
    reranker's (ms-marco-MiniLM-L6-v2's span about -11 … 11) instead of a fresh head's few hundredths, and the
    float noise of the encoder's sums with them, as it does in a trained model."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.weight.mul_(factor)
        model.classifier.bias.mul_(factor)
    model.save_pretrained(folder)


def compare(reference: Path, other: Path, bound: float | None) -> dict:
    from pipelines.runs import read_trec_run

    a, b = read_trec_run(reference), read_trec_run(other)
    max_abs = max_rel = 0.0
    reordered_queries = flips_beyond = 0
    for query_id, hits in a.items():
        theirs = {h.doc_id: h.score for h in b[query_id]}
        assert set(theirs) == {h.doc_id for h in hits}, query_id
        for hit in hits:
            difference = abs(hit.score - theirs[hit.doc_id])
            max_abs = max(max_abs, difference)
            max_rel = max(max_rel, difference / max(1.0, abs(hit.score)))
        reordered_queries += [h.doc_id for h in hits] != [h.doc_id for h in b[query_id]]
        if bound is not None:
            position = {h.doc_id: i for i, h in enumerate(b[query_id])}
            for first, second in zip(hits, hits[1:]):
                apart = first.score - second.score > 2 * bound * max(1.0, abs(first.score), abs(second.score))
                if apart and position[first.doc_id] > position[second.doc_id]:
                    flips_beyond += 1
    return {"byte_equal": reference.read_bytes() == other.read_bytes(), "max_abs_diff": max_abs,
            "max_rel_diff": max_rel, "queries_reordered": reordered_queries, "queries": len(a),
            "pairs_reordered_beyond_2x_bound": flips_beyond if bound is not None else None}


def score_range(run: Path) -> list[float]:
    scores = [float(line.split()[4]) for line in open(run)]
    return [min(scores), max(scores)]


ROUTE_NAMES = {"threads-2": "`rerank --threads 2`", "ray": "`rerank --ray --ray-actors 2` (actors of 1 thread)",
               "devices": "`rerank --devices cpu,cpu`", "cache-half": "`rerank --score-cache` (half the queries cached)",
               "service": "`esrerank serve`, 4 clients", "avx2-threads-1": "`rerank --threads 1`, torch held to AVX2",
               "avx2-threads-2": "`rerank --threads 2`, torch held to AVX2"}


def table(paths: list[str]) -> str:
    """A markdown table of result files: one row per route, one column group per file, against each file's
    reference (``rerank --threads 1``)."""
    results = [json.loads(Path(path).read_text()) for path in paths]
    # each cell: byte-equal / largest difference (that ÷ max(1, |score|)) / queries whose order differs
    head = "| route | " + " | ".join(
        f"head × {r['model'].rsplit(' x ', 1)[-1]}, scores {r['score_range'][0]:.3g} … {r['score_range'][1]:.3g}"
        for r in results) + " |"
    rows = [head, "|---|" + "---|" * len(results)]
    for route, name in ROUTE_NAMES.items():
        cells = []
        for r in results:
            got = r["routes"].get(route)
            cells.append("not run" if got is None else
                         f"{'yes' if got['byte_equal'] else 'no'} / {got['max_abs_diff']:.2g} "
                         f"({got['max_rel_diff']:.2g}) / {got['queries_reordered']} of {got['queries']}")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", default="cranfield")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--head-scale", type=float, default=1.0,
                        help="multiply the seeded head by this (200: logits spread like a trained reranker's)")
    parser.add_argument("--bound", type=float, default=None,
                        help="the stated bound, to count pairs reordered beyond twice it (default: the library's)")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--routes", default="threads-2,ray,devices,cache-half,service,avx2-threads-1,avx2-threads-2")
    parser.add_argument("--out", help="the results file to write (JSON)")
    parser.add_argument("--table", nargs="+", metavar="RESULTS", help="print a markdown table of results files, run nothing")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    if not args.out:
        parser.error("--out is required to run")
    from rerank.reproducibility import FLOAT32_SCORE_BOUND

    # only float32 is promised a bound: bf16 runs are measured without one unless --bound names it
    bound = args.bound if args.bound is not None else FLOAT32_SCORE_BOUND if args.dtype == "float32" else None
    work = Path(args.work or tempfile.mkdtemp(prefix="esrerank-repro-"))
    work.mkdir(parents=True, exist_ok=True)
    data = str(SHARED_DATA / args.collection)
    model = str(work / "model")
    if not (work / "model" / "config.json").is_file():
        seeded_minilm(model)
        if args.head_scale != 1.0:
            scale_head(model, args.head_scale)
    bm25 = work / "bm25.trec"
    _esrerank("evaluate", "--data", data, "--model", "none", "--retrieve-k", str(args.depth), "--save-run", str(bm25),
              "-q")
    common = ["--max-length", str(args.max_length), "--dtype", args.dtype]
    rerank = ["rerank", "--data", data, "--candidates", str(bm25), "--model", model, *common, "-q"]

    def run_file(name: str) -> Path:
        path = work / f"{name}.trec"
        for leftover in work.glob(f"{name}.trec*"):
            if leftover.is_dir():
                import shutil

                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        return path

    seconds = {}
    reference = run_file("threads-1")
    seconds["threads-1"] = _esrerank(*rerank, "--threads", "1", "--out", str(reference))
    results = {}
    for route in args.routes.split(","):
        out = run_file(route)
        if route == "threads-2":
            seconds[route] = _esrerank(*rerank, "--threads", "2", "--out", str(out))
        elif route == "ray":
            seconds[route] = _esrerank(*rerank, "--ray", "--ray-actors", "2", "--out", str(out))
        elif route == "devices":
            seconds[route] = _esrerank(*rerank, "--devices", "cpu,cpu", "--out", str(out))
        elif route == "cache-half":
            from pipelines.runs import read_trec_run, write_trec_run

            cache = work / "cache-half.sqlite"
            cache.unlink(missing_ok=True)
            candidates = read_trec_run(bm25)
            half = work / "bm25-half.trec"
            write_trec_run({q: hits for i, (q, hits) in enumerate(candidates.items()) if i % 2}, half)
            warm = run_file("cache-warm")
            _esrerank("rerank", "--data", data, "--candidates", str(half), "--model", model, *common, "-q",
                      "--threads", "2", "--score-cache", str(cache), "--out", str(warm))
            seconds[route] = _esrerank(*rerank, "--threads", "2", "--score-cache", str(cache), "--out", str(out))
        elif route == "service":
            from pipelines.runs import read_trec_run
            from retrieval.corpus import load_collection

            collection = load_collection(data, "test")
            seconds[route] = _service_run(model, {q.query_id: q.text for q in collection.queries},
                                          read_trec_run(bm25), collection.texts(), out, common)
        elif route.startswith("avx2-threads-"):
            seconds[route] = _esrerank(*rerank, "--threads", route.rsplit("-", 1)[1], "--out", str(out), env=AVX2)
        else:
            raise SystemExit(f"unknown route {route!r}")
        results[route] = compare(reference, out, bound)
        print(route, json.dumps(results[route]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    write_json(args.out, {
        "command": "python -m benchmarks.bench_reproducibility " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "work"),
        "commit": commit, "machine": machine(), "collection": args.collection, "depth": args.depth,
        "pairs": sum(1 for _ in open(reference)), "model": f"all-MiniLM-L6-v2 + seeded head (seed 0) x {args.head_scale:g}", "dtype": args.dtype,
        "max_length": args.max_length, "reference": "rerank --threads 1", "score_range": score_range(reference), "bound": bound, "seconds": seconds,
        "routes": results})
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
