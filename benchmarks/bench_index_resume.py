"""Index a large collection into a real engine with ``esrerank index``, kill the job once part-way and
resume it with the same command; report docs/s, the client's peak RSS, the index size and the final count.

The kill is SIGKILL (nothing is flushed or cleaned up), sent once the engine has indexed ``--kill-at``
of the collection. The resumed run is the unchanged command; it skips what the killed run's checkpoint
says the engine acknowledged.

    python -m benchmarks.bench_index_resume --data ../data/msmarco-shaped/collection.tsv \\
        --engine opensearch --url http://127.0.0.1:9221 --index msmarco [--kill-at 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.common import REPO as ROOT
from benchmarks.common import get_json as get
from benchmarks.common import indexed_so_far, module_command, write_json


def run_job(command: list[str], kill_at_docs: int | None, url: str, alias: str, log: Path) -> dict:
    started = time.perf_counter()
    with open(log, "a") as log_handle:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log_handle, stderr=subprocess.STDOUT)
        killed = False
        if kill_at_docs is not None:
            while process.poll() is None:
                time.sleep(2)
                if indexed_so_far(url, alias) >= kill_at_docs:
                    process.send_signal(signal.SIGKILL)
                    killed = True
                    break
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "killed": killed, "exit_status": status, "peak_rss_mb": usage.ru_maxrss / 1024,
            "indexed_by_engine": indexed_so_far(url, alias), "last_output": log.read_text()[-600:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--engine", choices=["elasticsearch", "opensearch"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--total", type=int, help="documents in the collection (default: count the lines)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction indexed when the job is killed")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args()
    total = args.total
    if total is None:
        with open(args.data, "rb") as handle:
            total = sum(1 for _ in handle)
    command = module_command("pipelines.cli", "index", "--data", args.data, "--engine", args.engine,
                             "--url", args.url, "--index", args.index, "--quiet")
    log = Path(f"{args.index}.bench-index.log").resolve()
    log.unlink(missing_ok=True)
    first = run_job(command, int(total * args.kill_at), args.url, args.index, log)
    print(json.dumps({"run": "killed", **first}), flush=True)
    second = run_job(command, None, args.url, args.index, log)
    print(json.dumps({"run": "resumed", **second}), flush=True)
    count = get(f"{args.url}/{args.index}/_count")["count"]
    indices = get(f"{args.url}/_cat/indices/{args.index}*?format=json&bytes=b")
    report = {
        "engine": args.engine, "version": next(iter(get(f"{args.url}/_nodes/_local?filter_path=nodes.*.version")["nodes"].values()))["version"], "documents": total,
        "count_in_index": count, "count_matches": count == total,
        "killed_after_s": round(first["seconds"], 1), "engine_had_indexed_at_kill": first["indexed_by_engine"],
        "resumed_run_s": round(second["seconds"], 1), "total_s": round(first["seconds"] + second["seconds"], 1),
        "docs_per_s": round(total / (first["seconds"] + second["seconds"])),
        "client_peak_rss_mb": round(max(first["peak_rss_mb"], second["peak_rss_mb"])),
        "index_size_mb": round(sum(int(i["store.size"]) for i in indices) / 2**20),
        "indices": [i["index"] for i in indices], "resumed_output": second["last_output"].strip().splitlines()[-2:],
    }
    print(json.dumps(report, indent=2))
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
