"""Load test of `esrerank serve` on loopback: 16 concurrent clients, 100 documents a request, 60 s, with
dynamic batching on (max-wait 5 ms) and off (max-wait 0); then malformed and oversized requests while
it serves. Prints requests/s, docs/s, p50/p99 latency, errors, and the batching-on/off ratio.

The service runs as its own process (`esrerank serve`); clients are threads with keep-alive connections.
Model: a local cross-encoder folder, by default all-MiniLM-L6-v2 with a seeded one-label head.

    python benchmarks/bench_service.py [--seconds 60] [--clients 16] [--docs 100] [--model DIR]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from msmarco_like import msmarco_like_pairs  # noqa: E402


def post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def start_service(model: str, port: int, max_wait_ms: float) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", model, "--port", str(port),
                                "--max-wait-ms", str(max_wait_ms), "-q"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    process.stdout.readline()  # "esrerank serving ..." once the socket listens
    return process


def load(port: int, requests: list[bytes], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset: int):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        i = offset
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                status, _ = post(connection, "/v1/rerank", requests[i % len(requests)])
            except OSError:
                status = 0
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                errors[0] += status != 200
            i += clients

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall = time.perf_counter() - started
    latencies_ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50_ms": float(np.percentile(latencies_ms, 50)),
            "p99_ms": float(np.percentile(latencies_ms, 99)), "errors": errors[0], "wall_s": wall}


def bad_requests(port: int) -> list[tuple[str, int, str]]:
    cases = {
        "malformed JSON": b"{not json",
        "missing query": json.dumps({"documents": ["x"]}).encode(),
        "10,000 documents": json.dumps({"query": "q", "documents": ["d"] * 10_000}).encode(),
        "1 MB string": json.dumps({"query": "q", "documents": ["x" * 1_000_000]}).encode(),
        "9 MB body": json.dumps({"query": "q", "documents": ["y" * 90_000] * 100}).encode(),
    }
    results = []
    for name, body in cases.items():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            status, payload = post(connection, "/v1/rerank", body)
        except (BrokenPipeError, ConnectionResetError):
            # the service answers an oversized body from its headers and closes: read that answer
            response = connection.getresponse()
            status, payload = response.status, response.read()
        connection.close()
        results.append((name, status, json.loads(payload)["error"]["message"][:70]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--model")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    from rerank.heads import init_cross_encoder, local_minilm_path

    model = args.model or str(init_cross_encoder(local_minilm_path(), tempfile.mkdtemp(prefix="minilm-ce-"), seed=0))
    pairs = msmarco_like_pairs(num_queries=40, passages_per_query=args.docs)
    requests = [json.dumps({"query": pairs[i][0], "documents": [p for _, p in pairs[i:i + args.docs]]}).encode()
                for i in range(0, len(pairs), args.docs)]
    results = {}
    for name, wait_ms in (("batching on (max-wait 5 ms)", 5.0), ("batching off (max-wait 0)", 0.0)):
        service = start_service(model, args.port, wait_ms)
        try:
            results[name] = load(args.port, requests, args.clients, args.seconds)
            if wait_ms:
                checks = bad_requests(args.port)
                after = load(args.port, requests, 2, 3)
        finally:
            service.terminate()
            service.wait(timeout=30)
    print(f"{args.clients} clients, {args.docs} documents a request, {args.seconds:.0f} s each, CPU")
    print(f"{'':<30} {'req/s':>7} {'docs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'requests':>9}")
    for name, r in results.items():
        print(f"{name:<30} {r['rps']:>7.2f} {r['rps'] * args.docs:>8.0f} {r['p50_ms']:>8.0f} {r['p99_ms']:>8.0f} "
              f"{r['errors']:>7} {r['requests']:>9}")
    on, off = results["batching on (max-wait 5 ms)"], results["batching off (max-wait 0)"]
    print(f"batching on / off: {on['rps'] / off['rps']:.2f}x requests/s")
    print("bad requests while serving:")
    for name, status, message in checks:
        print(f"  {name:<18} HTTP {status}  {message}")
    print(f"after them: {after['requests']} requests, {after['errors']} errors")


if __name__ == "__main__":
    main()
