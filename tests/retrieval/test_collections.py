"""Finding a collection by folder, name or ir_datasets id (retrieval.collections), offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from esrerank_errors import DataError
from retrieval.collections import data_dirs, load_collection
from retrieval.corpus import load_beir

REPO = Path(__file__).resolve().parents[2]


def _same(a, b):
    assert [(d.doc_id, d.title, d.text) for d in a.documents] == [(d.doc_id, d.title, d.text) for d in b.documents]
    assert [(q.query_id, q.text) for q in a.queries] == [(q.query_id, q.text) for q in b.queries]
    assert a.qrels == b.qrels


def test_a_name_or_a_missing_path_finds_the_folder_in_a_data_dir(vaswani, tmp_path, monkeypatch):
    monkeypatch.delenv("ESRERANK_DATA_DIR", raising=False)
    reference = load_beir(vaswani, "test")
    _same(load_collection("vaswani", "test", data_dir=vaswani.parent), reference)
    _same(load_collection("/somewhere/else/vaswani", "test", data_dir=vaswani.parent), reference)  # by its last part
    monkeypatch.setenv("ESRERANK_DATA_DIR", str(vaswani.parent))
    assert data_dirs(tmp_path)[:2] == [tmp_path, vaswani.parent]  # --data-dir first, then the environment
    _same(load_collection("vaswani", "test"), reference)


def test_the_default_collection_is_vaswani(vaswani):
    assert load_collection(None, "test", data_dir=vaswani.parent).name == "vaswani"


def test_an_ir_datasets_id_reads_files_laid_out_as_ir_datasets_keeps_them(scifact, tmp_path):
    # ir_datasets keeps BEIR's zip at <IR_DATASETS_HOME>/beir/scifact/source.zip; built here from the shared
    # copy, so loading `beir/scifact/train` needs no network and must give the same collection.
    home = tmp_path / "ir_datasets"
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w") as archive:
        archive.write(scifact / "corpus.jsonl", "scifact/corpus.jsonl")
        archive.write(scifact / "queries.jsonl", "scifact/queries.jsonl")
        archive.write(scifact / "qrels" / "train.tsv", "scifact/qrels/train.tsv")
    script = ("import json, sys; from retrieval.collections import load_collection; "
              "c = load_collection(sys.argv[1], data_dir=sys.argv[2]); "
              "print(json.dumps([c.name, [[d.doc_id, d.title, d.text] for d in c.documents], "
              "[[q.query_id, q.text] for q in c.queries], c.qrels]))")
    environment = {**os.environ, "IR_DATASETS_HOME": str(home), "ESRERANK_DATA_DIR": str(tmp_path / "empty")}
    result = subprocess.run([sys.executable, "-c", script, "beir/scifact/train", str(tmp_path / "empty")], cwd=REPO,
                            env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    name, documents, queries, qrels = json.loads(result.stdout.splitlines()[-1])
    reference = load_beir(scifact, "train")
    assert name == "beir-scifact-train"
    assert documents == [[d.doc_id, d.title, d.text] for d in reference.documents]
    assert sorted(queries) == sorted([q.query_id, q.text] for q in reference.queries)
    assert qrels == reference.qrels


def test_neither_a_local_copy_nor_the_network_says_both_ways_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ir_datasets"))  # an empty cache
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):  # no download, even online
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    monkeypatch.delenv("ESRERANK_DATA_DIR", raising=False)
    with pytest.raises(DataError) as missing:
        load_collection("../nowhere/nfcorpus", "test", data_dir=tmp_path)  # not in shared/data
    message = str(missing.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "--data-dir" in message and "network access" in message and "'nfcorpus'" in message


def test_an_unknown_name_lists_what_is_known(tmp_path):
    with pytest.raises(DataError, match="known names: .*vaswani"):
        load_collection("no-such-collection", "test", data_dir=tmp_path)
