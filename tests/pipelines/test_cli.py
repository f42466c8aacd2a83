import json

import numpy as np
import pytest
from run_agreement import assert_probabilities_within_bound, near_ties, reproducibility_violations

from pipelines.cli import main
from pipelines.evaluation import mean_scores, per_query_scores
from pipelines.runs import read_trec_run
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir
from retrieval.records import Hit

MEASURES = ["nDCG@10", "RR@10", "R@100", "R@1000", "AP"]


def test_evaluate_bm25_only_writes_json_and_run(tmp_path, vaswani, capsys):
    out, run_path = tmp_path / "m.json", tmp_path / "run.txt"
    assert main(["evaluate", "--data", str(vaswani), "--model", "none", "--k1", "1.2", "--b", "0.75",
                 "--output-json", str(out), "--save-run", str(run_path), "-q"]) == 0
    result = json.loads(out.read_text())
    assert list(result) == ["first_stage"] and list(result["first_stage"]) == MEASURES
    c = load_beir(vaswani, "test")
    index = InMemoryBM25(c.documents, k1=1.2, b=0.75)
    run = dict(zip((q.query_id for q in c.queries), index.search_many([q.text for q in c.queries], 1000)))
    expected = mean_scores(per_query_scores(run, c.qrels))
    assert result["first_stage"] == pytest.approx(expected, abs=1e-12)
    assert read_trec_run(run_path)[c.queries[0].query_id][0].doc_id == run[c.queries[0].query_id][0].doc_id
    assert "nDCG@10" in capsys.readouterr().out


def _evaluate_with_candidates(tmp_path, data, model) -> tuple[dict, object, object]:
    """`esrerank evaluate` of BM25 alone (saving its run), then of ``model`` reranking that run's top 20 in
    float32; returns the reranked measures JSON, the BM25 run file and the reranked run file."""
    out, run_path, reranked_path = tmp_path / "m.json", tmp_path / "bm25.run", tmp_path / "reranked.run"
    assert main(["evaluate", "--data", str(data), "--model", "none", "--save-run", str(run_path), "-q"]) == 0
    assert main(["evaluate", "--data", str(data), "--model", str(model), "--candidates", str(run_path),
                 "--rerank-k", "20", "--max-length", "64", "--dtype", "float32", "--output-json", str(out),
                 "--save-run", str(reranked_path), "-q"]) == 0
    return json.loads(out.read_text()), run_path, reranked_path


def _beir_qrels(folder, split="test") -> dict[str, dict[str, int]]:
    lines = (folder / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
    qrels: dict[str, dict[str, int]] = {}
    for query_id, doc_id, grade in (line.split("\t") for line in lines):
        qrels.setdefault(query_id, {})[doc_id] = int(grade)
    return qrels


def _ir_measures_of_run_file(path, qrels) -> dict[str, float]:
    """Each measure's mean over the judged queries, by ir-measures on the TREC run file as written, a query
    the run lacks counting 0 (trec_eval -c)."""
    import ir_measures

    run = list(ir_measures.read_trec_run(str(path)))
    values = {name: dict.fromkeys(qrels, 0.0) for name in MEASURES}
    for result in ir_measures.iter_calc([ir_measures.parse_measure(m) for m in MEASURES], qrels, run):
        values[str(result.measure)][result.query_id] = result.value
    return {name: float(np.mean(list(per_query.values()))) for name, per_query in values.items()}


@pytest.mark.floats
def test_evaluate_reranks_with_local_model_and_candidates(tmp_path, small_beir, spread_cross_encoder, capsys):
    import torch
    from sentence_transformers import CrossEncoder as SentenceTransformersCrossEncoder

    result, run_path, reranked_path = _evaluate_with_candidates(tmp_path, small_beir, spread_cross_encoder)
    assert set(result) == {"first_stage", "reranked"} and list(result["reranked"]) == MEASURES
    printed = capsys.readouterr().out
    assert "p (paired t)" in printed and "reranked" in printed
    # The measures reported are ir-measures' on the runs as saved, against the qrels file
    qrels = _beir_qrels(small_beir)
    assert result["first_stage"] == pytest.approx(_ir_measures_of_run_file(run_path, qrels), abs=1e-12)
    assert result["reranked"] == pytest.approx(_ir_measures_of_run_file(reranked_path, qrels), abs=1e-12)
    assert result["reranked"]["nDCG@10"] != result["first_stage"]["nDCG@10"]  # the reranker did reorder
    assert result["reranked"]["R@100"] == result["first_stage"]["R@100"]  # only the top 20 are reordered
    # The reranked run: each query's first-stage top 20 in the order of sentence-transformers' float32 scores of
    # the same model (queries and title + text read from the BEIR files), then the first stage's rest unchanged
    queries = {row["_id"]: row["text"] for row in map(json.loads, (small_beir / "queries.jsonl").read_text().splitlines())}
    texts = {}
    for row in map(json.loads, (small_beir / "corpus.jsonl").read_text().splitlines()):
        texts[row["_id"]] = f"{row['title']} {row['text']}" if row.get("title") else row["text"]
    first_stage, reranked = read_trec_run(run_path), read_trec_run(reranked_path)
    reference = SentenceTransformersCrossEncoder(str(spread_cross_encoder), max_length=64,
                                                 activation_fn=torch.nn.Identity())
    assert set(reranked) == set(first_stage) == set(queries)
    for query_id, hits in first_stage.items():
        head = [hit.doc_id for hit in hits[:20]]
        expected = reference.predict([(queries[query_id], texts[doc_id]) for doc_id in head])
        order = np.argsort(-expected, kind="stable")
        # sentence-transformers scores in other batches: the same scores within the reproducibility bound, and
        # with no near-ties the same order (the model's own)
        oracle = {query_id: [Hit(head[i], float(expected[i]), rank) for rank, i in enumerate(order, start=1)]}
        assert near_ties(oracle) == 0
        assert reproducibility_violations(oracle, {query_id: reranked[query_id][:20]}) == []
        got = reranked[query_id]
        assert [hit.doc_id for hit in got[20:]] == [hit.doc_id for hit in hits[20:]]


@pytest.mark.floats
def test_saved_run_reproduces_the_reported_measures_when_scores_are_close(tmp_path, small_beir, tiny_cross_encoder):
    # tiny_cross_encoder's scores of a query's documents are about 1e-6 apart: rounded to six decimals (as the
    # run files were written before 2026-12-07) they became ties, which ir-measures and trec_eval order by doc
    # id, so the file scored nDCG@10 0.2677 where evaluate reported 0.2684. Written exactly, they read back as
    # the very floats evaluate measured.
    result, _, reranked_path = _evaluate_with_candidates(tmp_path, small_beir, tiny_cross_encoder)
    assert result["reranked"] == pytest.approx(_ir_measures_of_run_file(reranked_path, _beir_qrels(small_beir)),
                                               abs=1e-12)


@pytest.mark.parametrize("problem,expected", [
    ("corpus", "corpus.jsonl:2: malformed JSON"),
    ("model", "not a sequence-classification model"),
    ("folder", "data folder not found"),
    ("candidates", "run file not found"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, small_beir, problem, expected, capsys):
    data = small_beir
    args = ["--model", "none"]
    if problem == "corpus":
        data = tmp_path / "broken"
        data.mkdir()
        (data / "qrels").mkdir()
        (data / "qrels" / "test.tsv").write_text((small_beir / "qrels" / "test.tsv").read_text())
        (data / "queries.jsonl").write_text((small_beir / "queries.jsonl").read_text())
        (data / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n{"_id": "2", "text": "y"\n')
    elif problem == "model":
        from models_support import local_minilm_path
        args = ["--model", str(local_minilm_path())]
    elif problem == "folder":
        data = tmp_path / "nowhere"
    else:
        args += ["--candidates", str(tmp_path / "missing.run")]
    assert main(["evaluate", "--data", str(data), *args, "-q"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert err.startswith("esrerank: error: ")


def test_fusion_is_off_by_default_and_auto_applies_what_the_recipe_recorded(tmp_path, small_beir, tiny_cross_encoder,
                                                                             capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_cross_encoder, model)
    common = ["evaluate", "--data", str(small_beir), "--model", str(model), "--rerank-k", "20", "--max-length", "64",
              "--dtype", "float32", "-q", "--output-json"]
    assert main([*common, str(tmp_path / "plain.json")]) == 0  # no record: reranker scores alone
    assert main([*common, str(tmp_path / "none.json"), "--fusion", "none"]) == 0
    # a record written before fusion was chosen on the dev split does not say where: refused
    (model / "esrerank_fusion.json").write_text(json.dumps({"fusion": "interpolate", "alpha": 0.3}))
    assert main([*common, str(tmp_path / "old.json"), "--fusion", "auto"]) == 2
    assert "does not say the fusion was chosen on a dev split" in capsys.readouterr().err
    (model / "esrerank_fusion.json").write_text(json.dumps({"fusion": "interpolate", "alpha": 0.3, "chosen_on": "dev"}))
    assert main([*common, str(tmp_path / "default.json")]) == 0  # a record alone does not turn fusion on
    assert main([*common, str(tmp_path / "auto.json"), "--fusion", "auto"]) == 0
    assert main([*common, str(tmp_path / "explicit.json"), "--fusion", "interpolate", "--alpha", "0.3"]) == 0
    def read(name):
        return json.loads((tmp_path / name).read_text())["reranked"]
    assert read("plain.json") == read("none.json") == read("default.json")
    assert read("auto.json") == read("explicit.json") != read("plain.json")


def test_search_prints_bm25_then_reranked_hits(vaswani, tiny_cross_encoder, capsys):
    from rerank.cross_encoder import CrossEncoder
    from retrieval.bm25 import InMemoryBM25
    from retrieval.corpus import load_beir

    collection = load_beir(vaswani, "test")
    bm25 = InMemoryBM25(collection.documents).search("dielectric constant of liquids", 20)
    assert main(["search", "dielectric constant of liquids", "--data", str(vaswani), "-k", "3", "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query 1: dielectric constant of liquids"
    assert [line.split()[2] for line in lines[1:]] == [h.doc_id for h in bm25[:3]]
    assert main(["search", "dielectric constant of liquids", "--data", str(vaswani), "-k", "3", "--rerank-k", "20",
                 "--model", str(tiny_cross_encoder), "--max-length", "128", "--dtype", "float32", "-q"]) == 0
    reranked = [line.split()[2] for line in capsys.readouterr().out.splitlines()[1:]]
    texts = collection.texts()
    scores = CrossEncoder(str(tiny_cross_encoder), max_length=128, dtype="float32").predict(
        [("dielectric constant of liquids", texts[h.doc_id]) for h in bm25])
    assert reranked == [bm25[i].doc_id for i in np.argsort(-scores, kind="stable")[:3]]


def test_serve_answers_with_the_key_and_stops_cleanly_on_sigterm(tiny_cross_encoder, tmp_path):
    import http.client
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from engines_support import free_port

    from rerank.cross_encoder import CrossEncoder

    port = free_port()
    (tmp_path / "key").write_text("k-123\n")
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "serve", "--model", str(tiny_cross_encoder),
                                "--port", str(port), "--max-length", "64", "--dtype", "float32", "--api-key-file",
                                str(tmp_path / "key"), "-q"], cwd=repo, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(240):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                assert connection.getresponse().status == 200
                break
            except OSError:
                time.sleep(0.25)
        docs = ["dielectric constants of liquids", "bananas"]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("POST", "/v1/rerank", body=json.dumps({"query": "dielectric", "documents": docs}),
                           headers={"Content-Type": "application/json", "Authorization": "Bearer k-123"})
        answer = json.loads(connection.getresponse().read())
        logits = CrossEncoder(str(tiny_cross_encoder), max_length=64, dtype="float32").predict(
            [("dielectric", d) for d in docs])
        got = {r["index"]: r["relevance_score"] for r in answer["results"]}
        assert_probabilities_within_bound([got[0], got[1]], logits)  # another process, its own thread count
    finally:
        process.send_signal(signal.SIGTERM)  # what docker stop sends (a background shell may ignore SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"serving {tiny_cross_encoder} on http://127.0.0.1:{port}" in out and "API key required" in out
