"""Golden outputs: a handful of commands and one Python API call on the shared collections, compared with the
files committed in tests/golden/ (issue 39: they must stay green through the reorganisation).

What is compared, and how:
- outputs with no model in them (the in-memory BM25 run and measures, the mined dataset, the Python API's
  hits): byte for byte, on every machine;
- outputs with model scores (a model built in the test from a fixed seed): byte for byte on the CPU model and
  thread count that made the golden files (``tests/golden/machine.json``); elsewhere within esrerank's
  reproducibility promise (``rerank.reproducibility``): every score within the bound, neighbours further apart
  than twice it in the same order, the measures equal except on queries with near-tied documents of different
  grades.

Regenerate (only on purpose, and say why in the commit):
``ESRERANK_UPDATE_GOLDEN=1 python -m pytest tests/test_golden_outputs.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import pytest
from run_agreement import assert_same_measures_but_near_ties, reproducibility_violations

from pipelines.cli import main
from pipelines.runs import read_trec_run

pytestmark = pytest.mark.floats  # the AVX2 / one-thread pass of .ci/run checks the other-machine path

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("ESRERANK_UPDATE_GOLDEN") == "1"
MEASURES = ("nDCG@10", "RR@10", "R@100", "AP")
SEARCHES = ["measurement of dielectric constant of liquids", "electron beam focusing"]


def this_machine() -> dict:
    """What byte-equal model scores depend on: the CPU model (its name, family and model numbers: these
    machines all call themselves "AMD EPYC" or "Intel Xeon"), the torch kernels it picks, the thread count."""
    import torch

    info: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return {"cpu": info.get("model name", platform.processor()), "cpu_family": info.get("cpu family"),
            "cpu_model": info.get("model"), "torch_kernels": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads()}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, vaswani, spread_cross_encoder):
    """Every golden command run once: {name: (bytes, kind)}; kind "exact" or "model"."""
    import io
    from contextlib import redirect_stdout

    import datasets

    from retrieval.bm25 import InMemoryBM25
    from retrieval.corpus import load_beir

    work = tmp_path_factory.mktemp("golden")
    model = str(spread_cross_encoder)
    data = ["--data", str(vaswani)]
    # float32: "auto" picks bfloat16 on CPUs fast at it, and the promise across machines is float32's
    float32 = ["--dtype", "float32"]

    def cli(*args: str) -> bytes:
        printed = io.StringIO()
        with redirect_stdout(printed):
            assert main([*args, "-q"]) == 0
        return printed.getvalue().encode()

    produced: dict[str, tuple[bytes, str]] = {}
    cli("evaluate", *data, "--model", "none", "--retrieve-k", "100", "--save-run", str(work / "bm25.run"),
        "--output-json", str(work / "bm25.json"))
    produced["evaluate-bm25.run"] = ((work / "bm25.run").read_bytes(), "exact")
    produced["evaluate-bm25.json"] = ((work / "bm25.json").read_bytes(), "exact")
    cli("evaluate", *data, "--model", model, *float32, "--retrieve-k", "100", "--rerank-k", "20", "--save-run",
        str(work / "reranked.run"), "--output-json", str(work / "reranked.json"))
    produced["evaluate-reranked.run"] = ((work / "reranked.run").read_bytes(), "model")
    produced["evaluate-reranked.json"] = ((work / "reranked.json").read_bytes(), "model")
    cli("rerank", *data, "--candidates", str(work / "bm25.run"), "--model", model, *float32, "--rerank-k", "10",
        "--out", str(work / "rerank.run"), "--devices", "cpu")
    produced["rerank.run"] = ((work / "rerank.run").read_bytes(), "model")
    produced["search-bm25.txt"] = (cli("search", *SEARCHES, *data, "-k", "5"), "exact")
    produced["search-reranked.txt"] = (cli("search", *SEARCHES, *data, "-k", "5", "--model", model, *float32,
                                           "--rerank-k", "20"), "model")
    cli("mine", *data, "--split", "test", "--out", str(work / "mined"), "--retrieve-k", "30", "--range-max", "30")
    produced["mine-stats.json"] = ((work / "mined" / "stats.json").read_bytes(), "exact")
    rows = datasets.load_from_disk(str(work / "mined")).to_list()
    produced["mine-rows.sha256"] = (
        (hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest() + "\n").encode(),
        "exact")
    collection = load_beir(vaswani, "test")
    index = InMemoryBM25(collection.documents, show_progress=False)
    hits = index.search_many([q.text for q in collection.queries[:5]], 10)
    api = {q.query_id: [[h.doc_id, repr(h.score)] for h in found] for q, found in zip(collection.queries, hits)}
    produced["python-api-search.json"] = ((json.dumps(api, indent=1) + "\n").encode(), "exact")
    return produced


def test_golden_outputs_are_unchanged(outputs, vaswani):
    from retrieval.corpus import load_beir

    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        for name, (content, _) in outputs.items():
            (GOLDEN / name).write_bytes(content)
        (GOLDEN / "machine.json").write_text(json.dumps(this_machine(), indent=2) + "\n")
        pytest.skip("golden outputs written to tests/golden/")
    made_on = json.loads((GOLDEN / "machine.json").read_text())
    same_machine = made_on == this_machine()
    assert sorted(p.name for p in GOLDEN.iterdir() if p.name != "machine.json") == sorted(outputs)
    qrels = load_beir(vaswani, "test").qrels
    for name, (content, kind) in outputs.items():
        golden = (GOLDEN / name).read_bytes()
        if kind == "exact" or same_machine:
            assert content == golden, f"{name} differs from tests/golden/{name}"
        elif name.endswith(".run"):
            ours, theirs = _run(content), _run(golden)
            assert reproducibility_violations(theirs, ours) == [], name
            assert_same_measures_but_near_ties(theirs, ours, qrels, MEASURES)
        elif name.endswith(".json"):  # measures of a model's run: checked through its run file above
            assert json.loads(content).keys() == json.loads(golden).keys(), name
        else:  # search lines: the same documents in the same order, scores printed to 4 decimals
            assert _search_lines(content) == _search_lines(golden), name


def _run(content: bytes):
    import tempfile

    with tempfile.NamedTemporaryFile("wb", suffix=".run") as handle:
        handle.write(content)
        handle.flush()
        return read_trec_run(handle.name)


def _search_lines(content: bytes) -> list[tuple[str, ...]]:
    """Each printed line without its score (ranks, ids and text): the score's last digit may differ by the bound."""
    lines = []
    for line in content.decode().splitlines():
        parts = line.split()
        lines.append(tuple(parts[:1] + parts[2:]) if parts and parts[0].isdigit() else tuple(parts))
    return lines
