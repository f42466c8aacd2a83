"""A real three-node OpenSearch 3.6.0 cluster (``bash .ci/servers.sh start opensearch-cluster``): an index of
3 shards and 1 replica searched through every node while one node is killed, then restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from engines_support import require_server
from run_agreement import top_k_agreement

from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir
from retrieval.engine_admin import IndexConfig
from retrieval.engines import connect
from retrieval.indexing import build_index

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("ESRERANK_SERVER_RUN", "/tmp/esrerank-servers")) / "opensearch-cluster"
CLIENTS = 16


def same_results(before, after) -> bool:
    """Equal scores rank by rank, and the same documents up to the order of equal scores: a primary and
    its replica may order tied documents differently (their own Lucene doc ids)."""
    agreement = top_k_agreement(dict(enumerate(before)), dict(enumerate(after)), k=10, rel_tol=0.0)
    return agreement.same_up_to_ties_share == 1.0


def health(node_url: str, query: str = "") -> dict:
    with urllib.request.urlopen(f"{node_url}/_cluster/health?{query}", timeout=120) as response:
        return json.loads(response.read())


def kill_node(node: int, timeout_s: float = 60) -> None:
    pid = int((CLUSTER_DIR / f"node-{node}" / "pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # gone once the kernel has reaped it (its parent is init: detached)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"node {node} (pid {pid}) was still there {timeout_s:.0f} s after SIGKILL")


def wait_for(condition, timeout_s: float, what: str) -> None:
    """Until ``condition()`` holds, at most ``timeout_s``: an event the test waits on, not a sleep."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.05)


def start_node(node: int) -> None:
    subprocess.run(["bash", ".ci/servers.sh", "start", "opensearch-cluster", "--node", str(node)], cwd=REPO,
                   check=True, capture_output=True, timeout=300)


@pytest.mark.server
@pytest.mark.parametrize("name,split", [("scifact", "train"), ("vaswani", "test"), ("cranfield", "test")])
def test_three_shards_one_replica_on_three_nodes_equal_in_memory_bm25(name, split, request):
    url = require_server("opensearch-cluster")
    collection = load_beir(request.getfixturevalue(name), split)
    alias = f"test-cluster-parity-{name}"
    searcher = connect("opensearch", url, alias)
    for index in searcher.list_indices(f"{alias}*"):
        searcher.rest.request("DELETE", f"/{index}")
    build_index(searcher, collection.documents, alias, f"shared:{name}",
                IndexConfig(k1=0.9, b=0.4, analyzer="english", shards=3, replicas=1), batch_docs=500,
                show_progress=False)
    assert health(url.split(",")[0], "wait_for_status=green&timeout=90s")["status"] == "green"
    memory = InMemoryBM25(collection.documents, k1=0.9, b=0.4, analyzer="english", length_norm="lucene")
    texts = [q.text for q in collection.queries]
    expected = dict(enumerate(memory.search_many(texts, 10)))
    with_dfs = top_k_agreement(expected, dict(enumerate(searcher.search_many(texts, 10))), k=10)
    plain = connect("opensearch", url, alias, dfs=False)
    without = top_k_agreement(expected, dict(enumerate(plain.search_many(texts, 10))), k=10)
    print(f"{name}: {len(texts)} queries; DFS: same top 10 up to ties {with_dfs.same_up_to_ties_share:.3f}, max "
          f"relative score diff {with_dfs.max_relative_score_diff:.2e}; without DFS: "
          f"{without.same_up_to_ties_share:.3f}, {without.max_relative_score_diff:.2e}")
    assert searcher.dfs and with_dfs.same_up_to_ties_share >= 0.99 and with_dfs.max_relative_score_diff <= 1e-3
    assert without.max_relative_score_diff > 1e-3


@pytest.mark.server
@pytest.mark.slow
def test_searches_fail_over_while_a_node_dies_and_nothing_is_lost(scifact):
    url = require_server("opensearch-cluster")
    nodes = url.split(",")
    collection = load_beir(scifact, "train")
    alias = "test-cluster-scifact"
    searcher = connect("opensearch", url, alias)
    for name in searcher.list_indices(f"{alias}*"):
        searcher.rest.request("DELETE", f"/{name}")
    report = build_index(searcher, collection.documents, alias, "shared:scifact",
                         IndexConfig(k1=0.9, b=0.4, analyzer="english", shards=3, replicas=1), batch_docs=500,
                         show_progress=False)
    assert report.count_in_index == len(collection.documents)
    assert health(nodes[0], "wait_for_status=green&timeout=90s")["status"] == "green"
    texts = [q.text for q in collection.queries]
    before = searcher.search_many(texts, 10)
    assert searcher.dfs  # 3 shards: global statistics

    failures: list[tuple[float, str]] = []
    answers: list[tuple[float, bool]] = []  # (time, equal to before) per completed batch
    stop = threading.Event()

    def client(number: int) -> None:
        own = connect("opensearch", url, alias)  # each client its own connections, as 16 users would have
        start = number * 7
        while not stop.is_set():
            chunk = [(start + i) % len(texts) for i in range(8)]
            try:
                hits = own.search_many([texts[i] for i in chunk], 10)
                answers.append((time.monotonic(), same_results([before[i] for i in chunk], hits)))
            except Exception as exc:  # noqa: BLE001 - every failure is counted, by time
                failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))
            start += 8

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(answers) >= 2 * CLIENTS, 120, "every client answered before the kill")
        killed_at = time.monotonic()
        kill_node(2)
        state = health(nodes[0], "wait_for_nodes=2&wait_for_status=yellow&timeout=120s")
        yellow_at = time.monotonic()
        assert state["number_of_nodes"] == 2 and state["status"] == "yellow"
        # the load goes on against the two nodes left: 4 times as many batches as there are clients
        wait_for(lambda: sum(1 for t, _ in answers if t >= yellow_at) >= 4 * CLIENTS, 120,
                 "searches answered once the cluster was yellow")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=300)
    after_yellow = [f for f in failures if f[0] >= yellow_at]
    assert not after_yellow, f"{len(after_yellow)} searches failed once the cluster was yellow: {after_yellow[0]}"
    assert sum(1 for t, _ in answers if t >= yellow_at) > 0
    assert all(same for _, same in answers), "a search answered other hits than before the node died"
    print(f"{len(answers)} batches answered, {len(failures)} failed, all before yellow "
          f"({yellow_at - killed_at:.1f} s after the kill): {sorted({reason[:120] for _, reason in failures})}")

    start_node(2)
    state = health(nodes[0], "wait_for_nodes=3&wait_for_status=green&timeout=180s")
    assert state["status"] == "green" and state["number_of_nodes"] == 3
    assert searcher.count(alias) == len(collection.documents)
    assert same_results(before, searcher.search_many(texts, 10))
