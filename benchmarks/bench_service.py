"""Load test of `esrerank serve` on loopback: 16 concurrent clients, 100 documents a request, 60 s, with
dynamic batching on (max-wait 5 ms) and off (max-wait 0); then malformed and oversized requests while
it serves. Prints requests/s, docs/s, p50/p99 latency, errors, and the batching-on/off ratio.

The service runs as its own process (`esrerank serve`); clients are threads with keep-alive connections.
Model: a local cross-encoder folder, by default all-MiniLM-L6-v2 with a seeded one-label head.

    python -m benchmarks.bench_service [--seconds 60] [--clients 16] [--docs 100] [--model DIR]

With ``--against-infinity PYTHON`` (the interpreter of a virtual environment with infinity-emb; it pins an
older sentence-transformers and numpy than esrerank's, so it lives in its own; the set that imports, made
with ``pip install "infinity-emb[server,torch,optimum]==0.0.78" "sentence-transformers>=3.4,<4"
"transformers<4.49" "numpy<2" "datasets<3" "pyarrow<17" torch "optimum[onnxruntime]>=1.24,<2"``) it
instead serves the same model with ``esrerank serve`` and with ``infinity_emb v2`` (engines torch and
optimum), one at a time, and sends each the same load: 16 clients and 1 client, 60 s each, with requests
of 100 documents (OpenSearch sends every hit) and of 10 (Elasticsearch's ``rank_window_size`` default).
Prints requests/s, docs/s, p50/p99 latency and errors for each, and esrerank's docs/s over the best
infinity engine's. The optimum engine needs ``"torch==2.8.*"`` added to that install (optimum < 2's ONNX
exporter imports a function later PyTorch releases dropped) and optimum pinned to ``1.24.0`` (later 1.x
releases refuse the absolute ONNX path infinity passes for a local folder: "Trying to load /.../model.onnx
but only found model.onnx"), and a model folder holding an ``.onnx`` file: the script exports the model's
float32 ONNX into a copy of the folder for it (:func:`onnx_copy`).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import seeded_minilm, start_serve, write_json
from benchmarks.generators.msmarco_like import msmarco_like_pairs


def post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def start_service(model: str, port: int, max_wait_ms: float) -> subprocess.Popen:
    return start_serve(model, port, "--max-wait-ms", max_wait_ms)


def load(port: int, requests: list[bytes], clients: int, seconds: float, path: str = "/v1/rerank") -> dict:
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
                status, _ = post(connection, path, requests[i % len(requests)])
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


def onnx_copy(python: str, model: str) -> str:
    """A copy of ``model`` with its float32 ONNX export beside it, made by optimum in infinity's environment:
    infinity's optimum engine loads a cross-encoder's ``*.onnx`` file from the model folder and exports
    none itself (it stops with "No onnx files found")."""
    folder = Path(tempfile.mkdtemp(prefix="minilm-ce-onnx-"))
    script = ("import sys\n"
              "from optimum.onnxruntime import ORTModelForSequenceClassification\n"
              "from transformers import AutoTokenizer\n"
              "ORTModelForSequenceClassification.from_pretrained(sys.argv[1], export=True).save_pretrained(sys.argv[2])\n"
              "AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])\n")
    done = subprocess.run([python, "-c", script, model, str(folder)], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"the ONNX export for infinity's optimum engine failed (exit {done.returncode})")
    return str(folder)


def start_infinity(python: str, model: str, port: int, engine: str) -> subprocess.Popen:
    if engine == "optimum":
        model = onnx_copy(python, model)
    process = subprocess.Popen([python, "-m", "infinity_emb.cli", "v2", "--model-id", model, "--engine", engine,
                                "--device", "cpu", "--port", str(port), "--served-model-name", "reranker",
                                "--log-level", "warning"],
                               env={**os.environ, "HF_HUB_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"})
    deadline = time.monotonic() + 600  # the optimum engine exports the model to ONNX first
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"infinity ({engine}) exited with {process.returncode} before serving")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(1)
    process.kill()
    raise SystemExit(f"infinity ({engine}) did not answer /health in 600 s")


def compare_with_infinity(args, model: str) -> None:
    """The same model, the same load, esrerank serve vs infinity_emb (each engine), one server at a time."""
    servers = {"esrerank serve": None, **{f"infinity {engine}": engine for engine in args.infinity_engines.split(",")}}
    shapes = {}
    for docs in (100, 10):
        pairs = msmarco_like_pairs(num_queries=40, passages_per_query=docs)
        shapes[docs] = [json.dumps({"query": pairs[i][0], "documents": [p for _, p in pairs[i:i + docs]],
                                    "model": "reranker"}).encode() for i in range(0, len(pairs), docs)]
    rows = {}
    for server, engine in servers.items():
        try:
            process = (start_service(model, args.port, 5.0) if engine is None
                       else start_infinity(str(args.against_infinity), model, args.port, engine))
        except SystemExit as failed:  # one engine that cannot start (its log is above) must not lose the others
            print(f"{server}: not measured: {failed}", flush=True)
            continue
        path = "/v1/rerank" if engine is None else "/rerank"
        try:
            load(args.port, shapes[10], 2, 5, path)  # warm-up
            for docs, requests in shapes.items():
                for clients in (args.clients, 1):
                    result = load(args.port, requests, clients, args.seconds, path)
                    rows[(server, docs, clients)] = result
                    print(f"{server:<18} {docs:>4} docs {clients:>3} clients: {result['rps']:7.2f} req/s "
                          f"{result['rps'] * docs:8.0f} docs/s p50 {result['p50_ms']:7.0f} ms p99 {result['p99_ms']:7.0f} ms "
                          f"errors {result['errors']}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"\n{'server':<18} {'docs':>5} {'clients':>8} {'req/s':>7} {'docs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for (server, docs, clients), r in rows.items():
        print(f"{server:<18} {docs:>5} {clients:>8} {r['rps']:>7.2f} {r['rps'] * docs:>8.0f} {r['p50_ms']:>8.0f} "
              f"{r['p99_ms']:>8.0f} {r['errors']:>7}")
    for docs in shapes:
        for clients in (args.clients, 1):
            theirs = {s: rows[(s, docs, clients)] for s in servers if s != "esrerank serve" and (s, docs, clients) in rows}
            if ("esrerank serve", docs, clients) not in rows or not theirs:
                continue  # a server that could not start: nothing to compare (reported above)
            ours = rows[("esrerank serve", docs, clients)]
            best = max(theirs, key=lambda s: theirs[s]["rps"])
            print(f"{docs} docs, {clients} clients: esrerank / {best}: {ours['rps'] / theirs[best]['rps']:.2f}x docs/s, "
                  f"p99 {ours['p99_ms']:.0f} vs {theirs[best]['p99_ms']:.0f} ms")
    out = args.out or Path(tempfile.gettempdir()) / "bench_service_infinity.json"
    write_json(out, [{"server": s, "docs": d, "clients": c, **r} for (s, d, c), r in rows.items()])
    print(f"results: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--model")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--against-infinity", type=Path, metavar="PYTHON",
                        help="compare with infinity_emb run by this interpreter (see above)")
    parser.add_argument("--infinity-engines", default="torch,optimum",
                        help="infinity engines to serve the model with, one at a time (default torch,optimum)")
    parser.add_argument("--out", type=Path, help="JSON results (with --against-infinity)")
    args = parser.parse_args()
    model = args.model or seeded_minilm(tempfile.mkdtemp(prefix="minilm-ce-"))
    if args.against_infinity:
        compare_with_infinity(args, model)
        return
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
