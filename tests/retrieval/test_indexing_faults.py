"""Kill a real Elasticsearch in the middle of an indexing run, restart it, re-run: exactly the corpus."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engines_support import require_server

from retrieval.corpus import iter_beir_corpus
from retrieval.engines import connect

REPO = Path(__file__).resolve().parents[2]
PORT = 9210
URL = f"http://127.0.0.1:{PORT}"
SERVER_DIR = "/tmp/esrerank-fault-es"


def servers(*args):
    subprocess.run(["bash", str(REPO / ".ci" / "servers.sh"), *args, "--port", str(PORT), "--dir", SERVER_DIR],
                   check=True, timeout=300)


@pytest.fixture
def dedicated_server():
    require_server("elasticsearch")  # the distribution and user exist where the shared one runs
    if os.geteuid() != 0:
        pytest.skip("starting a second server needs root (it runs as the 'esrerank' user)")
    servers("start", "elasticsearch")
    yield
    servers("stop", "elasticsearch")
    shutil.rmtree(SERVER_DIR, ignore_errors=True)


@pytest.mark.server
@pytest.mark.slow
def test_kill_restart_rerun_indexes_exactly_the_corpus(dedicated_server, scifact, tmp_path):
    # The SciFact corpus with three malformed lines slipped in: they are reported and skipped.
    lines = (scifact / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    lines.insert(10, '{"_id": "broken", "text": ')
    lines.insert(2000, "not json at all")
    lines.insert(4000, '{"title": "no id", "text": "x"}')
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected_ids = [d.doc_id for d in iter_beir_corpus(corpus, on_error="skip")]
    dead_letter = tmp_path / "dead.jsonl"
    command = [sys.executable, "-m", "pipelines.cli", "index", "--data", str(corpus), "--url", URL,
               "--index", "fault", "--batch-docs", "25", "--workers", "2", "--max-retries", "1",
               "--dead-letter", str(dead_letter), "-q"]

    # the client holds still (SIGSTOP, by itself) right after its 100th bulk request of 25 documents returned:
    # 2,500 of 5,183 acknowledged, at most one more request in flight (two workers). The server dies then, and
    # only then the client goes on.
    first = subprocess.Popen([sys.executable, str(REPO / "tests" / "signal_after.py"), "STOP",
                              "retrieval.indexing:send_bulk", "100", *command[3:]], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped = False
    try:
        deadline = time.monotonic() + 180
        while not stopped and time.monotonic() < deadline:
            pid, status = os.waitpid(first.pid, os.WUNTRACED | os.WNOHANG)
            if pid and not os.WIFSTOPPED(status):
                raise AssertionError(f"indexing ended before the kill (status {status})")
            stopped = bool(pid)
            time.sleep(0.05)
        assert stopped, "indexing did not reach 100 bulk requests within 180 s"
        os.kill(int(Path(SERVER_DIR, "pid").read_text()), signal.SIGKILL)  # the server dies mid-run
    finally:
        if stopped:
            first.send_signal(signal.SIGCONT)
        else:
            first.kill()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 1, (out, err)
    assert "re-run the same command to resume" in err

    servers("start", "elasticsearch", "--keep-data")
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resumed after" in second.stdout
    resumed_after = int(second.stdout.split("resumed after ")[1].split(";")[0])
    assert resumed_after > 0, second.stdout

    searcher = connect("elasticsearch", URL, "fault")
    assert searcher.count() == len(expected_ids) == 5183
    searcher.fetch_texts(expected_ids)  # raises if any document is missing
    malformed = [json.loads(line) for line in dead_letter.read_text().splitlines() if '"line"' in line]
    assert {row["line"] for row in malformed} >= {11, 2001, 4001}
    assert all(row["file"] == str(corpus) for row in malformed)
