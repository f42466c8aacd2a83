"""Every user-causable failure of the command line ends in one line naming the problem, exit status 2 for
bad input and 1 for a run that failed; never a traceback. (Failures that need a live engine, such as a
missing index or a refused registration, are in retrieval/test_engines.py and pipelines/test_engine_rerank.py.)"""

from __future__ import annotations

import socket
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest
from engines_support import free_port

from pipelines.cli import main


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, vaswani):
    root = tmp_path_factory.mktemp("bad-input")
    corpus = root / "bad-corpus"
    (corpus / "qrels").mkdir(parents=True)
    (corpus / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n')
    (corpus / "queries.jsonl").write_text((vaswani / "queries.jsonl").read_text())
    (corpus / "qrels" / "test.tsv").write_text((vaswani / "qrels" / "test.tsv").read_text())
    qrels = root / "bad-qrels"
    (qrels / "qrels").mkdir(parents=True)
    (qrels / "corpus.jsonl").write_text((vaswani / "corpus.jsonl").read_text())
    (qrels / "queries.jsonl").write_text((vaswani / "queries.jsonl").read_text())
    (qrels / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t2\n")
    (root / "bad.run").write_text("1 Q0 d1 1 0.5\n1 Q0 d2 two 0.4 run\n")
    (root / "bad_ids.json").write_text("[1, 2")
    (root / "empty.key").write_text("\n")
    return root


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def not_an_engine():
    """An HTTP server that answers HTML (a URL pointing at the wrong service)."""
    server = HTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture()
def taken_port():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]



CASES = [
    # (name, arguments (with {placeholders}), exit status, fragment of the one line)
    ("data folder missing", "evaluate --data /nonexistent/data --model none", 2, "data folder not found"),
    ("malformed corpus line", "evaluate --data {bad}/bad-corpus --model none", 2, "corpus.jsonl:2: malformed JSON"),
    ("malformed qrels line", "evaluate --data {bad}/bad-qrels --model none", 2, "test.tsv:2: expected 3 (BEIR)"),
    ("malformed run file", "evaluate --data {vaswani} --candidates {bad}/bad.run --model none", 2,
     "bad.run:1: expected 6 columns"),
    ("query ids not JSON", "evaluate --data {vaswani} --query-ids {bad}/bad_ids.json --model none", 2,
     "expected a JSON list of query ids"),
    ("unknown split", "evaluate --data {vaswani} --split nosuch --model none", 2, "qrels for split 'nosuch' not found"),
    ("alpha out of range", "evaluate --data {vaswani} --model none --fusion interpolate --alpha 2", 2,
     "--alpha: must be between 0 and 1"),
    ("max length too small", "evaluate --data {vaswani} --model {tiny} --max-length 4", 2,
     "--max-length: must be at least 8"),
    ("negative rerank depth", "evaluate --data {vaswani} --model none --rerank-k -1", 2, "--rerank-k: must be 0 or more"),
    ("zero retrieve depth", "evaluate --data {vaswani} --model none --retrieve-k 0", 2,
     "--retrieve-k: must be a positive integer"),
    ("not a number", "evaluate --data {vaswani} --model none --retrieve-k ten", 2, "not an integer: 'ten'"),
    ("missing model folder", "evaluate --data {vaswani} --model /nonexistent/model", 2, "no such model folder"),
    ("folder that is not a model", "evaluate --data {vaswani} --model {bad}", 2, "not a transformers model folder"),
    ("engine down", "evaluate --data {vaswani} --retriever opensearch --url http://127.0.0.1:{refused} --index x "
                    "--model none", 1, "cannot reach http://127.0.0.1:{refused}"),
    ("wrong URL scheme", "evaluate --data {vaswani} --retriever opensearch --url htp://127.0.0.1:9201 --index x "
                         "--model none", 2, "not a server URL"),
    ("URL of another service", "evaluate --data {vaswani} --retriever elasticsearch --url {html} --index x --model none",
     1, "is this URL an Elasticsearch/OpenSearch server?"),
    ("engine index without --index", "evaluate --data {vaswani} --retriever opensearch --model none", 2, "needs --index"),
    ("search pipeline without OpenSearch", "evaluate --data {vaswani} --search-pipeline p", 2,
     "needs --retriever opensearch"),
    ("search without data", "search dielectric", 2, "needs --data"),
    ("search with k 0", "search dielectric --data {vaswani} -k 0", 2, "-k/--k: must be a positive integer"),
    ("index of a missing corpus", "index --data /nonexistent.tsv --index x", 2, "corpus not found"),
    ("index into an engine that is down", "index --data {vaswani} --index x --url http://127.0.0.1:{refused}", 1,
     "cannot reach"),
    ("mine from missing data", "mine --data /nonexistent --out {bad}/mined", 2, "data folder not found"),
    ("train on a missing dataset", "train --dataset /nonexistent --base-model {tiny} --out {bad}/model", 2,
     "not a dataset written by 'esrerank mine'"),
    ("serve on a port in use", "serve --model {tiny} --port {taken}", 1, "cannot listen on 127.0.0.1:{taken}"),
    ("serve a missing model", "serve --model /nonexistent/model", 2, "no such model folder"),
    ("serve with an empty key file", "serve --model {tiny} --api-key-file {bad}/empty.key", 2, "API key file is empty"),
    ("unknown subcommand", "evaluat", 2, "invalid choice: 'evaluat'"),
    ("abbreviated option", "serve --model {tiny} --api-key secret", 2, "unrecognized arguments"),
]


@pytest.mark.parametrize("name,arguments,status,fragment", CASES, ids=[case[0] for case in CASES])
def test_failure_is_one_line_with_the_right_exit_status(name, arguments, status, fragment, bad_files, vaswani,
                                                        tiny_cross_encoder, not_an_engine, taken_port, capsys):
    values = {"bad": bad_files, "vaswani": vaswani, "tiny": tiny_cross_encoder, "html": not_an_engine,
              "taken": taken_port, "refused": free_port()}
    argv = [part.format(**values) for part in arguments.split()] + ["-q"]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    error = capsys.readouterr().err.strip()
    assert code == status, error
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1, error
    assert lines[0].startswith("esrerank") and fragment.format(**values) in lines[0], lines[0]
