"""A real three-node OpenSearch 3.6.0 cluster against one node, on the same machine.

Needs the cluster (``bash .ci/servers.sh start opensearch-cluster``, HTTP 9211-9213) and, for the
comparison, the one-node OpenSearch 3.6.0 (``bash .ci/servers.sh start opensearch``, 9201).

Steps (``--steps``, default both):
- ``faults``: ``esrerank index`` of the first ``--passages`` passages of ``collection.tsv`` into the
  cluster (3 shards, 1 replica, the URL naming all three nodes); node 2 is SIGKILLed once the engine has
  indexed half of them and started again 20 s later; the job is left to finish, or run again unchanged
  if it stopped. Then the count, every id (read back with ``search_after``) and the cluster's health.
- ``speed``: the same passages indexed into a fresh index of the cluster and of the one node (docs/s),
  then ``--queries`` real queries, top 100, through ``_msearch`` (queries/s): the cluster with DFS (the
  default on 3 shards), the cluster without, and the one node; and how far the scores without DFS are
  from those with it.

    python -m benchmarks.bench_cluster --data ../data/msmarco-shaped [--passages 200000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
import urllib.request
from functools import partial
from pathlib import Path

from benchmarks.common import REPO as ROOT
from benchmarks.common import get_json, indexed_so_far, module_command, write_json

CLUSTER = "http://127.0.0.1:9211,http://127.0.0.1:9212,http://127.0.0.1:9213"
ONE_NODE = "http://127.0.0.1:9201"
CLUSTER_DIR = Path(os.environ.get("ESRERANK_SERVER_RUN", "/tmp/esrerank-servers")) / "opensearch-cluster"


get = partial(get_json, timeout=300)  # the health request waits up to 180 s for green


def write_passages(collection: Path, count: int, out: Path) -> list[str]:
    ids = []
    with open(collection, encoding="utf-8") as source, open(out, "w", encoding="utf-8") as target:
        for line in source:
            if len(ids) == count:
                break
            target.write(line)
            ids.append(line.split("\t", 1)[0])
    return ids


def index_command(passages: Path, url: str, alias: str, shards: int, replicas: int, work: Path) -> list[str]:
    return module_command("pipelines.cli", "index", "--data", passages, "--engine", "opensearch", "--url", url,
                          "--index", alias, "--shards", shards, "--replicas", replicas,
                          "--dead-letter", work / f"{alias}.dead-letter.jsonl", "-q")


def cluster_node(action: str, node: int) -> None:
    subprocess.run(["bash", ".ci/servers.sh", action, "opensearch-cluster", "--node", str(node)], cwd=ROOT,
                   check=True, capture_output=True, timeout=300)


def ids_in_index(node: str, alias: str) -> set[str]:
    from retrieval.engines import connect

    searcher = connect("opensearch", node, alias)
    found: set[str] = set()
    after = None
    while True:
        body = {"size": 10_000, "_source": False, "sort": [{"_id": "asc"}], "query": {"match_all": {}}}
        if after:
            body["search_after"] = after
        hits = searcher.rest.request("POST", f"/{alias}/_search", body=body)["hits"]["hits"]
        if not hits:
            return found
        found.update(hit["_id"] for hit in hits)
        after = hits[-1]["sort"]


def faults(args, passages: Path, ids: list[str]) -> dict:
    node = CLUSTER.split(",")[0]
    alias = "bench-faults"
    for name in get(f"{node}/_cat/indices/{alias}*?format=json"):
        urllib.request.urlopen(urllib.request.Request(f"{node}/{name['index']}", method="DELETE"), timeout=60)
    command = index_command(passages, CLUSTER, alias, 3, 1, args.work)
    log = args.work / "faults-index.log"
    started = time.perf_counter()
    with open(log, "w") as handle:
        job = subprocess.Popen(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        while job.poll() is None and indexed_so_far(node, alias) < len(ids) // 2:
            time.sleep(0.5)
        killed_at_docs = indexed_so_far(node, alias)
        pid = int((CLUSTER_DIR / "node-2" / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed_at = time.perf_counter() - started
        time.sleep(20)
        cluster_node("start", 2)
        restarted_at = time.perf_counter() - started
        first_exit = job.wait()
    runs = 1
    if first_exit != 0:  # stopped while the node was away: the same command resumes it
        runs = 2
        with open(log, "a") as handle:
            second_exit = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT).returncode
    else:
        second_exit = None
    seconds = time.perf_counter() - started
    health = get(f"{node}/_cluster/health?wait_for_status=green&wait_for_nodes=3&timeout=180s")
    present = ids_in_index(node, alias)
    result = {"passages": len(ids), "killed_node_2_after_s": round(killed_at, 1), "engine_had_indexed": killed_at_docs,
              "node_2_back_after_s": round(restarted_at, 1), "first_run_exit": first_exit, "runs": runs,
              "second_run_exit": second_exit, "total_s": round(seconds, 1),
              "count": get(f"{node}/{alias}/_count")["count"], "every_id_present": present == set(ids),
              "ids_missing": len(set(ids) - present), "health": health["status"],
              "log_tail": log.read_text()[-400:]}
    print(json.dumps(result))
    return result


def index_speed(url: str, passages: Path, alias: str, shards: int, replicas: int, work: Path, count: int) -> dict:
    node = url.split(",")[0]
    for name in get(f"{node}/_cat/indices/{alias}*?format=json"):
        urllib.request.urlopen(urllib.request.Request(f"{node}/{name['index']}", method="DELETE"), timeout=60)
    started = time.perf_counter()
    subprocess.run(index_command(passages, url, alias, shards, replicas, work), cwd=ROOT, check=True,
                   capture_output=True)
    seconds = time.perf_counter() - started
    return {"url": url, "shards": shards, "replicas": replicas, "seconds": round(seconds, 1),
            "docs_per_s": round(count / seconds)}


def query_speed(url: str, alias: str, queries: list[str], dfs: bool | None) -> tuple[dict, list]:
    from retrieval.engines import connect

    searcher = connect("opensearch", url, alias, dfs=dfs)
    searcher.search_many(queries[:64], 100)  # warm: connections, caches of the first batch
    started = time.perf_counter()
    hits = searcher.search_many(queries, 100)
    seconds = time.perf_counter() - started
    return {"url": url, "dfs": searcher.dfs, "queries_per_s": round(len(queries) / seconds, 1)}, hits


def speed(args, passages: Path, ids: list[str]) -> dict:
    alias = "bench-speed"
    indexing = [index_speed(CLUSTER, passages, alias, 3, 1, args.work, len(ids)),
                index_speed(ONE_NODE, passages, alias, 1, 0, args.work, len(ids))]
    with open(args.data / "queries.tsv", encoding="utf-8") as handle:
        queries = [line.rstrip("\n").split("\t", 1)[1] for line in handle][:args.queries]
    with_dfs, dfs_hits = query_speed(CLUSTER, alias, queries, None)
    without_dfs, plain_hits = query_speed(CLUSTER, alias, queries, False)
    one_node, one_hits = query_speed(ONE_NODE, alias, queries, None)
    same_top10 = sum([h.doc_id for h in a[:10]] == [h.doc_id for h in b[:10]] for a, b in zip(dfs_hits, plain_hits))
    one_node_same = sum([h.doc_id for h in a[:10]] == [h.doc_id for h in b[:10]] for a, b in zip(dfs_hits, one_hits))
    worst = 0.0
    for a, b in zip(dfs_hits, plain_hits):
        scores = {h.doc_id: h.score for h in a}
        worst = max([worst] + [abs(h.score - scores[h.doc_id]) / scores[h.doc_id] for h in b if h.doc_id in scores])
    result = {"indexing": indexing, "queries": [with_dfs, without_dfs, one_node],
              "without_dfs_same_top10_as_dfs": f"{same_top10}/{len(queries)}",
              "without_dfs_max_relative_score_diff": round(worst, 4),
              "cluster_dfs_same_top10_as_one_node": f"{one_node_same}/{len(queries)}"}
    print(json.dumps(result))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with collection.tsv and queries.tsv")
    parser.add_argument("--passages", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-cluster"))
    parser.add_argument("--steps", default="faults,speed")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    passages = args.work / "passages.tsv"
    ids = write_passages(args.data / "collection.tsv", args.passages, passages)
    results = {}
    if "faults" in args.steps:
        results["faults"] = faults(args, passages, ids)
    if "speed" in args.steps:
        results["speed"] = speed(args, passages, ids)
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
