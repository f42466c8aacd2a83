"""Every user-causable failure of the command line ends in one line naming the problem, exit status 2 for
bad input and 1 for a run that failed; never a traceback. The cases walk the user errors the other tests
raise through the library (bad corpus, queries, qrels and run files, unusable models, datasets and devices,
options that do not go together), each as a user meets it: from the command line. (Failures that need a live
engine, such as a missing index or a refused registration, are in retrieval/test_engines.py and
pipelines/test_engine_rerank.py.)"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import traceback
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from engines_support import free_port

from pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]


def _beir(folder: Path, corpus: str | None = None, queries: str | None = None, qrels: str | None = None) -> None:
    """A small BEIR folder; each file can be replaced by a broken one."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(corpus if corpus is not None else
                                         '{"_id": "d1", "text": "dielectric constant of liquids"}\n'
                                         '{"_id": "d2", "text": "waveguide fed microwave radiation"}\n')
    (folder / "queries.jsonl").write_text(queries if queries is not None else '{"_id": "1", "text": "dielectric"}\n')
    (folder / "qrels" / "test.tsv").write_text(qrels if qrels is not None else "query-id\tcorpus-id\tscore\n1\td1\t1\n")


def _models(root: Path, tiny: Path) -> None:
    """Model folders a user may point at by mistake: an unreadable config, two labels, no classification head."""
    config = json.loads((tiny / "config.json").read_text())
    (root / "model-bad-config").mkdir()
    (root / "model-bad-config" / "config.json").write_text("{")
    two_labels = {key: value for key, value in config.items() if key != "num_labels"}
    (root / "model-two-labels").mkdir()
    (root / "model-two-labels" / "config.json").write_text(json.dumps(
        {**two_labels, "id2label": {"0": "no", "1": "yes"}, "label2id": {"no": 0, "yes": 1}}))
    (root / "model-no-head").mkdir()
    (root / "model-no-head" / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))


def _datasets(root: Path) -> None:
    import datasets

    datasets.Dataset.from_list([{"query": "q", "docs": ["a", "b"], "labels": [1, 0]}] * 4).save_to_disk(
        str(root / "dataset-lists"))
    datasets.Dataset.from_list([{"query": "q", "positive": "a", "negative": "b"}] * 4).save_to_disk(
        str(root / "dataset-triplets"))


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, vaswani, tiny_cross_encoder):
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
    _beir(root / "ok")
    _beir(root / "no-text", corpus='{"_id": "d1", "title": "a title and no text"}\n')
    _beir(root / "dup-docs", corpus='{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n'
                                    '{"_id": "d1", "text": "one again"}\n')
    _beir(root / "no-docs", corpus="\n")
    _beir(root / "empty-query", queries='{"_id": "1", "text": "dielectric"}\n{"_id": "2", "text": " "}\n')
    _beir(root / "dup-query", queries='{"_id": "1", "text": "dielectric"}\n{"_id": "1", "text": "waveguide"}\n')
    _beir(root / "bad-grade", qrels="query-id\tcorpus-id\tscore\n1\td1\thigh\n")
    (root / "bad-rank.run").write_text("1 Q0 d1 one 0.5 run\n")
    (root / "unknown-doc.run").write_text("1 Q0 no-such-doc 1 0.5 run\n")
    (root / "ok.run").write_text("1 Q0 d1 1 0.5 run\n")
    (root / "not-this-job.run").write_text("1 Q0 d1 1 0.5 run\n")
    (root / "unjudged_ids.json").write_text('["no-such-query"]')
    (root / "template.json").write_text('{"query": ')
    _models(root, tiny_cross_encoder)
    _datasets(root)
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
    # data files (retrieval/test_corpus.py, test_collections.py, pipelines/test_pipeline.py raise these in the library)
    ("unknown collection name", "evaluate --data no-such-collection --model none", 2,
     "no-such-collection: data folder not found"),
    ("corpus line without text", "evaluate --data {bad}/no-text --model none", 2,
     "corpus.jsonl:1: missing field 'text'"),
    ("duplicate doc id", "evaluate --data {bad}/dup-docs --model none", 2,
     "corpus.jsonl:3: duplicate doc id 'd1' (first on line 1)"),
    ("empty corpus", "evaluate --data {bad}/no-docs --model none", 2, "corpus.jsonl: the corpus has no documents"),
    ("query with empty text", "evaluate --data {bad}/empty-query --model none", 2,
     "queries.jsonl:2: query '2' has empty text"),
    ("duplicate query id", "evaluate --data {bad}/dup-query --model none", 2,
     "queries.jsonl:2: duplicate query id '1' (first on line 1)"),
    ("relevance not a number", "evaluate --data {bad}/bad-grade --model none", 2,
     "test.tsv:2: relevance 'high' is not a number"),
    ("run file rank not a number", "evaluate --data {bad}/ok --candidates {bad}/bad-rank.run --model none", 2,
     "bad-rank.run:1: rank 'one' or score '0.5' is not a number"),
    ("run naming documents not in the corpus", "evaluate --data {bad}/ok --candidates {bad}/unknown-doc.run "
                                               "--model none", 2, "candidate doc ids are not in the corpus"),
    ("query ids that are not judged", "evaluate --data {bad}/ok --query-ids {bad}/unjudged_ids.json --model none", 2,
     "unjudged_ids.json: 1 query ids are not judged queries"),
    # first-stage options
    ("negative k1", "evaluate --data {bad}/ok --model none --k1 -1", 2, "--k1: must be 0 or more"),
    ("b above 1", "evaluate --data {bad}/ok --model none --b 2", 2, "--b: must be between 0 and 1"),
    ("unknown analyzer", "evaluate --data {bad}/ok --model none --analyzer french", 2, "invalid choice: 'french'"),
    ("fields without an engine", "evaluate --data {bad}/ok --model none --fields title", 2,
     "--fields is for an engine index"),
    ("fields and a query template", "evaluate --data {bad}/ok --model none --retriever opensearch --index x "
                                    "--fields title --query-template {bad}/template.json", 2,
     "give either --fields or --query-template, not both"),
    ("field with a bad boost", "evaluate --data {bad}/ok --model none --retriever opensearch --index x "
                               "--fields title^x", 2, "not a field name with an optional ^boost"),
    ("query template not JSON", "evaluate --data {bad}/ok --model none --retriever opensearch --index x "
                                "--query-template {bad}/template.json", 2, "template.json:1: not JSON"),
    # models and devices (rerank/test_cross_encoder.py, test_passages.py)
    ("model config unreadable", "evaluate --data {bad}/ok --model {bad}/model-bad-config", 2,
     "cannot load the model config"),
    ("model with two labels", "evaluate --data {bad}/ok --model {bad}/model-two-labels", 2,
     "has 2 labels; a reranking cross-encoder has one"),
    ("model without a classification head", "evaluate --data {bad}/ok --model {bad}/model-no-head", 2,
     "is a BertModel, not a sequence-classification model"),
    ("maxp window too short", "evaluate --data {bad}/ok --model {tiny} --passages maxp --max-length 40", 2,
     "max_length 40 leaves 5 tokens for a window"),
    ("device that is no device", "evaluate --data {bad}/ok --model {tiny} --device nonsense", 2,
     "device 'nonsense' (--device) is not a device name"),
    ("device this machine lacks", "evaluate --data {bad}/ok --model {tiny} --device cuda:99", 2,
     "device 'cuda:99' (--device): this machine has"),
    # mining (pipelines/test_mining.py)
    ("mining window reversed", "mine --data {bad}/ok --split test --out {bad}/mined --range-min 50 --range-max 10",
     2, "0 <= range_min < range_max (--range-min, --range-max), got 50 and 10"),
    ("no hard negatives", "mine --data {bad}/ok --split test --out {bad}/mined --num-negatives 0", 2,
     "num_negatives (--num-negatives) and retrieve_k (--retrieve-k) must be at least 1"),
    ("margin without a teacher", "mine --data {bad}/ok --split test --out {bad}/mined --absolute-margin 0.5", 2,
     "a margin (--absolute-margin or --relative-margin) needs a teacher model (--teacher)"),
    ("more dev queries than queries", "mine --data {vaswani} --split test --out {bad}/mined --dev-queries 1000", 2,
     "dev queries (--dev-queries) must be between 1 and 92"),
    ("excluded queries not JSON", "mine --data {bad}/ok --split test --out {bad}/mined "
                                  "--exclude-queries {bad}/bad_ids.json", 2, "expected a JSON list of query ids"),
    # training (rerank/test_training.py)
    ("margin-mse without a teacher", "train --dataset {bad}/dataset-lists --base-model {tiny} --out {bad}/model "
                                     "--loss margin-mse", 2, "margin-mse learns a teacher's margins: give a teacher"),
    ("teacher with a loss that ignores it", "train --dataset {bad}/dataset-lists --base-model {tiny} --out "
                                            "{bad}/model --teacher {tiny} --loss lambda", 2,
     "distillation from a teacher trains with margin-mse or listnet, not lambda (--loss)"),
    ("training on triplets", "train --dataset {bad}/dataset-triplets --base-model {tiny} --out {bad}/model", 2,
     "training needs labeled-list rows (query, docs, labels)"),
    ("unknown learning-rate schedule", "train --dataset {bad}/dataset-lists --base-model {tiny} --out {bad}/model "
                                       "--lr-schedule steep", 2, "invalid choice: 'steep'"),
    # batch reranking (pipelines/test_batch_rerank.py)
    ("rerank output not written by esrerank", "rerank --data {bad}/ok --candidates {bad}/ok.run --model {tiny} "
                                              "--out {bad}/not-this-job.run", 2, "it was not written by this job"),
    ("rerank from an engine without --index", "rerank --data {bad}/ok --candidates {bad}/ok.run --model {tiny} "
                                              "--out {bad}/out.run --retriever opensearch", 2,
     "--retriever opensearch needs --index NAME"),
    ("rerank on a device that is no device", "rerank --data {bad}/ok --candidates {bad}/ok.run --model {tiny} "
                                             "--out {bad}/out.run --devices nonsense", 2, "is not a device name"),
    # output paths, refused before any work
    ("evaluate --output-json is a folder", "evaluate --data {bad}/ok --model none --output-json {bad}", 2,
     "--output-json: '{bad}' is a folder: give a file name"),
    ("evaluate --save-run under a file", "evaluate --data {bad}/ok --model none --save-run {bad}/ok.run/run.trec", 2,
     "is a file, not a folder"),
    ("rerank --out is a folder", "rerank --data {bad}/ok --candidates {bad}/ok.run --model {tiny} --out {bad}", 2,
     "is a folder: give a file name"),
    ("mine --out is a file", "mine --data {bad}/ok --out {bad}/ok.run", 2, "--out: '{bad}/ok.run' is a file: give a folder"),
    ("an output name too long", "evaluate --data {bad}/ok --model none --output-json {bad}/" + "x" * 300, 2,
     "File name too long"),
    ("a full disk while writing", "evaluate --data {bad}/ok --model none --output-json /dev/full", 1,
     "No space left on device"),
    ("train --out under a file", "train --dataset {bad}/dataset-lists --base-model {tiny} --out {bad}/ok.run/model", 2,
     "is a file, not a folder"),
    # engines (retrieval/test_engines.py, pipelines/test_engine_rerank.py need live ones; here one that is down)
    ("register with the engine down", "register opensearch --url http://127.0.0.1:{refused} --service-url "
                                      "http://127.0.0.1:8080", 1, "cannot reach http://127.0.0.1:{refused}"),
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
    except Exception:  # anything else reaches the user as a traceback
        pytest.fail(f"{name}: a traceback instead of one line:\n{traceback.format_exc()}")
    error = capsys.readouterr().err.strip()
    assert code == status, error
    assert "Traceback" not in error
    lines = [line for line in error.splitlines() if line.strip()]
    assert len(lines) == 1, error
    assert lines[0].startswith("esrerank") and fragment.format(**values) in lines[0], lines[0]


PROCESS_CASES = ["data folder missing", "malformed corpus line", "duplicate doc id", "negative k1",
                 "unknown subcommand"]


@pytest.mark.parametrize("name", PROCESS_CASES)
def test_the_process_prints_one_line_and_no_traceback(name, bad_files, vaswani):
    """The same from a real process: its whole stderr is the one line (no traceback, no logging noise)."""
    arguments, status, fragment = next(case[1:] for case in CASES if case[0] == name)
    argv = [part.format(bad=bad_files, vaswani=vaswani) for part in arguments.split()]
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", *argv, "-q"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


@pytest.mark.parametrize("module, flags, expected", [
    ("opensearchpy", ["--retriever", "opensearch", "--index", "x"], "pip install 'esrerank[opensearch]'"),
    ("ray", ["--ray"], "pip install 'esrerank[ray]'"),
])
def test_a_missing_optional_client_is_one_line_with_the_install_command(module, flags, expected, vaswani):
    """The extra's package made unimportable the way Python itself marks a blocked import (None in
    sys.modules): the command ends in one line naming the install command, exit status 2, no traceback."""
    import subprocess
    import sys

    program = (f"import sys; sys.modules[{module!r}] = None; from pipelines.cli import main; "
               f"sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", program, "evaluate", "--data", str(vaswani), "--model", "none",
                           *flags], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("esrerank: error:") and expected in done.stderr
