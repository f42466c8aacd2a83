"""Reranking a run file as a resumable batch job (pipelines.batch_rerank, ``esrerank rerank``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from run_agreement import reproducibility_violations

from esrerank_errors import DataError
from pipelines.batch_rerank import rerank_run_file, rerank_run_file_on_devices
from pipelines.retrieve_rerank import RerankConfig, first_stage_run, rerank_run
from pipelines.runs import read_trec_run, write_trec_run
from rerank.cross_encoder import CrossEncoder
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir

REPO = Path(__file__).resolve().parents[2]
DEPTH = 100


@pytest.fixture(scope="module")
def setup(vaswani, tiny_cross_encoder, tmp_path_factory):
    collection = load_beir(vaswani, "test")
    candidates = first_stage_run(InMemoryBM25(collection.documents), collection.queries, DEPTH)
    folder = tmp_path_factory.mktemp("batch")
    write_trec_run(candidates, folder / "bm25.trec", tag="bm25")
    model = CrossEncoder(str(tiny_cross_encoder), max_length=128, dtype="float32")
    return collection, read_trec_run(folder / "bm25.trec"), model, folder


@pytest.fixture(scope="module")
def uninterrupted(setup):
    collection, candidates, model, folder = setup
    out = folder / "whole.trec"
    report = rerank_run_file(collection.queries, candidates, collection.texts(), model, out, queries_per_chunk=4,
                             show_progress=False)
    assert report.queries == 93 and report.resumed_after == 0 and report.pairs == 93 * DEPTH
    return out.read_text()


def test_equals_the_pipeline_written_in_one_go(setup, uninterrupted):
    collection, candidates, model, folder = setup
    reference = rerank_run(collection.queries, candidates, model, collection.texts(),
                           RerankConfig(rerank_k=DEPTH, queries_per_batch=4))
    write_trec_run(reference, folder / "reference.trec")
    assert uninterrupted == (folder / "reference.trec").read_text()


class _CrashAfter:
    """The model, failing on its n-th call (a crash in the middle of a job)."""

    def __init__(self, model, calls):
        self.model, self.calls = model, calls

    def predict(self, pairs):
        self.calls -= 1
        if self.calls < 0:
            raise RuntimeError("simulated crash")
        return self.model.predict(pairs)

    def __repr__(self):
        return repr(self.model)


def test_a_crash_and_a_torn_write_resume_to_the_same_run(setup, uninterrupted, tmp_path):
    collection, candidates, model, _ = setup
    out = tmp_path / "crashed.trec"
    with pytest.raises(RuntimeError, match="simulated crash"):
        rerank_run_file(collection.queries, candidates, collection.texts(), _CrashAfter(model, 5), out,
                        queries_per_chunk=4, show_progress=False)
    with open(out, "ab") as torn:  # what a kill in the middle of a write leaves
        torn.write(b"57 Q0 1234 1 0.1234")
    report = rerank_run_file(collection.queries, candidates, collection.texts(), model, out, queries_per_chunk=4,
                             show_progress=False)
    assert report.resumed_after == 20 and report.queries == 73 and report.pairs == 73 * DEPTH
    assert out.read_text() == uninterrupted
    again = rerank_run_file(collection.queries, candidates, collection.texts(), model, out, queries_per_chunk=4,
                            show_progress=False)
    assert again.queries == 0 and again.pairs == 0  # complete: nothing scored again


def test_other_inputs_or_a_foreign_file_are_refused(setup, uninterrupted, tmp_path):
    collection, candidates, model, folder = setup
    with pytest.raises(DataError, match="other inputs"):
        rerank_run_file(collection.queries, candidates, collection.texts(), model, folder / "whole.trec",
                        rerank_k=10, queries_per_chunk=4, show_progress=False)
    (tmp_path / "foreign.trec").write_text("1 Q0 d 1 1.0 x\n")
    with pytest.raises(DataError, match="not written by this job"):
        rerank_run_file(collection.queries, candidates, collection.texts(), model, tmp_path / "foreign.trec",
                        show_progress=False)


def test_killed_at_half_then_rerun_gives_the_uninterrupted_run(setup, uninterrupted, vaswani, tiny_cross_encoder,
                                                              tmp_path):
    _, _, _, folder = setup
    out = tmp_path / "killed.trec"
    command = [sys.executable, "-m", "pipelines.cli", "rerank", "--data", str(vaswani), "--candidates",
               str(folder / "bm25.trec"), "--model", str(tiny_cross_encoder), "--max-length", "128", "--dtype",
               "float32", "--out", str(out), "--queries-per-chunk", "4", "--devices", "cpu", "-q"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # killed by itself right after the progress file's 11th record (the fingerprint, then 10 chunks of 4
    # queries): 40 queries durable, never a race with the job's end
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "signal_after.py"), "KILL",
                             "pipelines.batch_rerank:_append", "11", *command[3:]], cwd=REPO, env=environment,
                            capture_output=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    progress = out.with_name(out.name + ".progress.jsonl")
    done = json.loads(progress.read_text().splitlines()[-1])["done"]
    assert done == 40
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    resumed_after = int(result.stdout.split("; ")[-1].split()[0])
    assert resumed_after == done and f"({(93 - resumed_after) * DEPTH} pairs" in result.stdout  # nothing rescored
    assert out.read_text() == uninterrupted
    records = [json.loads(line) for line in progress.read_text().splitlines()]
    times = [record["at"] for record in records]  # every record is timed, so chunk speeds survive the kill
    assert times == sorted(times) and [r["done"] for r in records if r.get("resumed")] == [resumed_after]


@pytest.mark.floats
def test_one_process_per_device_merges_to_the_same_run(setup, uninterrupted, tiny_cross_encoder, tmp_path):
    collection, candidates, _, _ = setup
    report = rerank_run_file_on_devices(collection.queries, candidates, collection.texts(), str(tiny_cross_encoder),
                                        ["cpu", "cpu"], tmp_path / "parallel.trec",
                                        {"max_length": 128, "dtype": "float32"}, queries_per_chunk=4)
    assert report.queries == 93
    # each process batches other queries together (and runs torch's own thread count): byte for byte is not
    # promised, the reproducibility bound is (the tiny model's near-equal scores may swap places)
    whole = tmp_path / "whole.trec"
    whole.write_text(uninterrupted)
    assert reproducibility_violations(read_trec_run(whole), read_trec_run(tmp_path / "parallel.trec")) == []
