import json

import pytest

from pipelines.cli import main
from pipelines.evaluation import mean_scores, per_query_scores
from pipelines.runs import read_trec_run
from retrieval.bm25 import InMemoryBM25
from retrieval.corpus import load_beir

MEASURES = ["nDCG@10", "RR@10", "R@100", "R@1000", "AP"]


def test_evaluate_bm25_only_writes_json_and_run(tmp_path, vaswani, capsys):
    out, run_path = tmp_path / "m.json", tmp_path / "run.txt"
    assert main(["evaluate", "--data", str(vaswani), "--model", "none", "--k1", "1.2", "--b", "0.75",
                 "--output-json", str(out), "--save-run", str(run_path), "-q"]) == 0
    result = json.loads(out.read_text())
    assert list(result) == ["bm25"] and list(result["bm25"]) == MEASURES
    c = load_beir(vaswani, "test")
    index = InMemoryBM25(c.documents, k1=1.2, b=0.75)
    run = dict(zip((q.query_id for q in c.queries), index.search_many([q.text for q in c.queries], 1000)))
    expected = mean_scores(per_query_scores(run, c.qrels))
    assert result["bm25"] == pytest.approx(expected, abs=1e-12)
    assert read_trec_run(run_path)[c.queries[0].query_id][0].doc_id == run[c.queries[0].query_id][0].doc_id
    assert "nDCG@10" in capsys.readouterr().out


def test_evaluate_reranks_with_local_model_and_candidates(tmp_path, small_beir, tiny_cross_encoder, capsys):
    out, run_path = tmp_path / "m.json", tmp_path / "bm25.run"
    assert main(["evaluate", "--data", str(small_beir), "--model", "none", "--save-run", str(run_path), "-q"]) == 0
    assert main(["evaluate", "--data", str(small_beir), "--model", str(tiny_cross_encoder), "--candidates",
                 str(run_path), "--rerank-k", "20", "--max-length", "64", "--output-json", str(out), "-q"]) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"bm25", "reranked"} and list(result["reranked"]) == MEASURES
    assert result["reranked"]["R@100"] == result["bm25"]["R@100"]  # only the top 20 are reordered
    printed = capsys.readouterr().out
    assert "p (paired t)" in printed and "reranked" in printed


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
        from rerank.heads import local_minilm_path
        args = ["--model", str(local_minilm_path())]
    elif problem == "folder":
        data = tmp_path / "nowhere"
    else:
        args += ["--candidates", str(tmp_path / "missing.run")]
    assert main(["evaluate", "--data", str(data), *args, "-q"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert err.startswith("esrerank: error: ")


def test_fusion_is_off_by_default_and_auto_applies_what_the_recipe_recorded(tmp_path, small_beir, tiny_cross_encoder):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_cross_encoder, model)
    common = ["evaluate", "--data", str(small_beir), "--model", str(model), "--rerank-k", "20", "--max-length", "64",
              "--dtype", "float32", "-q", "--output-json"]
    assert main([*common, str(tmp_path / "plain.json")]) == 0  # no record: reranker scores alone
    assert main([*common, str(tmp_path / "none.json"), "--fusion", "none"]) == 0
    (model / "esrerank_fusion.json").write_text(json.dumps({"fusion": "interpolate", "alpha": 0.3}))
    assert main([*common, str(tmp_path / "default.json")]) == 0  # a record alone does not turn fusion on
    assert main([*common, str(tmp_path / "auto.json"), "--fusion", "auto"]) == 0
    assert main([*common, str(tmp_path / "explicit.json"), "--fusion", "interpolate", "--alpha", "0.3"]) == 0
    def read(name):
        return json.loads((tmp_path / name).read_text())["reranked"]
    assert read("plain.json") == read("none.json") == read("default.json")
    assert read("auto.json") == read("explicit.json") != read("plain.json")
