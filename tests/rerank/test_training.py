"""Training wiring: sentence-transformers' own losses, the trainer, the saved model, the recipe."""

import json

import numpy as np
import pytest
import torch
from run_agreement import assert_scores_within_bound, measure_sensitive_near_ties, near_ties
from sentence_transformers import CrossEncoder as STCrossEncoder
from sentence_transformers.cross_encoder import losses

from rerank.training import TrainingConfig, load_model, make_loss, to_pairs
from retrieval.records import Hit

BATCH_QUERIES = ["what causes scurvy", "bm25 saturation"]
BATCH_DOCS = [["vitamin c deficiency causes scurvy", "ships sailed far", "citrus fruit"],
              ["k1 controls term frequency saturation", "b normalizes length", "bananas", "an unrelated text"]]
BATCH_LABELS = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])]


@pytest.mark.parametrize("loss,scheme,reference", [
    ("lambda", "ndcg2pp", lambda m: losses.LambdaLoss(m, weighting_scheme=losses.NDCGLoss2PPScheme(), mini_batch_size=8)),
    ("lambda", "ndcg1", lambda m: losses.LambdaLoss(m, weighting_scheme=losses.NDCGLoss1Scheme(), mini_batch_size=8)),
    ("lambda", "lambdarank", lambda m: losses.LambdaLoss(m, weighting_scheme=losses.LambdaRankScheme(), mini_batch_size=8)),
    ("lambda", "none", lambda m: losses.LambdaLoss(m, weighting_scheme=losses.NoWeightingScheme(), mini_batch_size=8)),
    ("listnet", "ndcg2pp", lambda m: losses.ListNetLoss(m, mini_batch_size=8)),
    ("plistmle", "ndcg2pp", lambda m: losses.PListMLELoss(m, mini_batch_size=8)),
    ("ranknet", "ndcg2pp", lambda m: losses.RankNetLoss(m, mini_batch_size=8)),
    ("listmle", "ndcg2pp", lambda m: losses.ListMLELoss(m, mini_batch_size=8)),
])
@pytest.mark.floats
def test_listwise_loss_equals_sentence_transformers_on_a_fixed_batch(tiny_cross_encoder, loss, scheme, reference):
    model = STCrossEncoder(str(tiny_cross_encoder), max_length=32, activation_fn=torch.nn.Identity())
    model.eval()  # no dropout: the two computations see the same network
    ours = make_loss(model, TrainingConfig(loss=loss, lambda_scheme=scheme))
    theirs = reference(model)
    with torch.no_grad():
        a = ours([BATCH_QUERIES, BATCH_DOCS], BATCH_LABELS)
        b = theirs([BATCH_QUERIES, BATCH_DOCS], BATCH_LABELS)
    assert type(ours) is type(theirs)
    assert float(a) == pytest.approx(float(b), rel=1e-6) and float(a) > 0


@pytest.mark.floats
def test_bce_on_pairs_equals_sentence_transformers(tiny_cross_encoder):
    import datasets

    model = STCrossEncoder(str(tiny_cross_encoder), max_length=32, activation_fn=torch.nn.Identity())
    model.eval()
    listed = datasets.Dataset.from_list([{"query": q, "docs": d, "labels": labels.tolist()}
                                         for q, d, labels in zip(BATCH_QUERIES, BATCH_DOCS, BATCH_LABELS)])
    pairs = to_pairs(listed)
    assert len(pairs) == 7 and pairs[0] == {"query": BATCH_QUERIES[0], "passage": BATCH_DOCS[0][0], "label": 1.0}
    ours = make_loss(model, TrainingConfig(loss="bce"))
    with torch.no_grad():
        a = ours([pairs["query"], pairs["passage"]], torch.tensor(pairs["label"]))
        b = losses.BinaryCrossEntropyLoss(model)([pairs["query"], pairs["passage"]], torch.tensor(pairs["label"]))
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_base_encoder_gets_a_fresh_head_and_attention_dropout_is_off():
    from models_support import local_minilm_path

    model = load_model(str(local_minilm_path()), TrainingConfig(max_length=128))
    assert model.num_labels == 1
    # CrossEncoder.config: sentence-transformers' public view of the transformers config, in 5.x and 6.x
    assert model.config.attention_probs_dropout_prob == 0.0
    assert model.config.hidden_dropout_prob == pytest.approx(0.1)  # MiniLM's own, left as it was


@pytest.mark.slow
def test_recipe_end_to_end_on_a_tiny_model(small_beir, spread_cross_encoder, tmp_path, capsys):
    from pipelines.cli import main
    from rerank.cross_encoder import CrossEncoder

    out = tmp_path / "recipe"
    code = main(["recipe", "--train-data", str(small_beir), "--train-split", "test", "--heldout-data", str(small_beir),
                 "--base-model", str(spread_cross_encoder), "--out", str(out), "--heldout-queries", "8",
                 "--max-length", "64", "--batch-size", "4", "--dev-queries", "8", "--dev-retrieve-k", "10",
                 "--retrieve-k", "30", "--num-negatives", "4", "--epochs", "1", "-q"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["mining"]["kept"] == 14 and report["training"]["steps"] == 4  # 30 - 8 evaluation - 8 dev
    assert len(json.loads((out / "heldout_query_ids.json").read_text())) == 8
    measures = report["evaluation"]["measures"]
    assert set(measures) == {"first_stage", "reranked"}
    # the report's figures, recomputed here from the saved model with ir-measures directly
    import ir_measures

    from pipelines.fusion import FUSION_FILE
    from retrieval.bm25 import InMemoryBM25
    from retrieval.corpus import load_beir

    collection = load_beir(small_beir, "test")
    ids = json.loads((out / "heldout_query_ids.json").read_text())
    queries = [q for q in collection.queries if q.query_id in ids]
    texts = collection.texts()
    bm25 = dict(zip(ids, InMemoryBM25(collection.documents).search_many(
        [q.text for q in sorted(queries, key=lambda q: ids.index(q.query_id))], 100)))
    model = CrossEncoder(str(out / "model"))
    qrels = {q: collection.qrels[q] for q in ids}
    reranked, first_stage = {}, {}
    for query_id, hits in bm25.items():
        query = next(q.text for q in queries if q.query_id == query_id)
        scores = model.predict([(query, texts[h.doc_id]) for h in hits])
        reranked[query_id] = {h.doc_id: float(s) for h, s in zip(hits, scores)}
        first_stage[query_id] = {h.doc_id: h.score for h in hits}
    ndcg = ir_measures.nDCG @ 10
    # scored here in other batches than the recipe's: the promise keeps the top 10's order but where documents
    # of different grades are nearly tied; each such query may move the mean by at most 1/len(queries)
    run = _best_first(reranked)
    sensitive = measure_sensitive_near_ties(run, qrels)
    assert measures["first_stage"]["nDCG@10"] == pytest.approx(ir_measures.calc_aggregate([ndcg], qrels, first_stage)[ndcg])
    assert measures["reranked"]["nDCG@10"] == pytest.approx(ir_measures.calc_aggregate([ndcg], qrels, reranked)[ndcg],
                                                            abs=1e-6 + len(sensitive) / len(run))
    # the fusion is chosen on the dev split (the 8 dev queries mining held out), recorded exactly when it beat
    # the reranker alone there, and applied unchanged to the held-out queries
    choice = report["fusion_choice"]
    dev_ids = json.loads((out / "mined" / "mining_config.json").read_text())["dev_queries"]
    assert choice["chosen_on"] == "dev" and choice["queries"] == len(dev_ids) == 8 and not set(dev_ids) & set(ids)
    # interpolation at weight 1 ranks by the reranker's (min-max normalised) scores alone
    assert choice["grid"]["interpolate:1.0"] == pytest.approx(choice["reranked_alone_nDCG@10"], abs=1e-12)
    assert choice["nDCG@10"] == max(choice["grid"].values())
    recorded = out / "model" / FUSION_FILE
    assert recorded.is_file() == choice["beats_reranker_alone"] == (choice["nDCG@10"] > choice["reranked_alone_nDCG@10"])
    if recorded.is_file():
        assert json.loads(recorded.read_text()) == {k: v for k, v in choice.items() if k != "grid"}
    applied = report["evaluation"]["fusion"]
    assert (applied["fusion"], applied["alpha"], applied["chosen_on"]) == (choice["fusion"], choice["alpha"], "dev")
    assert "nDCG@10" in capsys.readouterr().out
    # the saved model loads in esrerank, sentence-transformers and transformers, with the same scores
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs = [("a query", "a document about it"), ("another", "text")]
    ours = CrossEncoder(str(out / "model"), max_length=64, dtype="float32").predict(pairs)
    theirs = STCrossEncoder(str(out / "model"), max_length=64, activation_fn=torch.nn.Identity()).predict(pairs)
    tokenizer = AutoTokenizer.from_pretrained(str(out / "model"))
    hf = AutoModelForSequenceClassification.from_pretrained(str(out / "model")).eval()
    with torch.no_grad():
        raw = hf(**tokenizer([q for q, _ in pairs], [d for _, d in pairs], return_tensors="pt", padding=True)).logits[:, 0]
    assert_scores_within_bound(ours, theirs)
    assert_scores_within_bound(ours, raw.numpy())


@pytest.mark.slow
def test_the_fusion_choice_does_not_see_the_heldout_judgments(small_beir, tiny_cross_encoder, tmp_path):
    """The recipe run twice on collections that differ only in the held-out queries' judgments: the same model,
    the same fusion chosen and recorded (chosen on the dev split), other held-out figures."""
    import shutil

    from pipelines.cli import main
    from pipelines.fusion import FUSION_FILE
    from pipelines.mining import split_queries
    from pipelines.recipe import RecipeConfig
    from retrieval.corpus import load_beir

    collection = load_beir(small_beir, "test")
    heldout = {q.query_id for q in split_queries(collection.queries, 8, RecipeConfig.seed)[1]}
    changed = tmp_path / "changed-heldout-judgments"
    shutil.copytree(small_beir, changed)
    doc_ids = [d.doc_id for d in collection.documents]
    lines = ["query-id\tcorpus-id\tscore"]
    for number, (query_id, judged) in enumerate(collection.qrels.items()):
        if query_id in heldout:  # three other documents judged relevant: what these queries' figures are made of
            judged = {doc_ids[(7 * number + offset) % len(doc_ids)]: 1 for offset in range(3)}
        lines += [f"{query_id}\t{doc}\t{grade}" for doc, grade in judged.items()]
    (changed / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")

    reports, records = [], []
    for data in (small_beir, changed):
        out = tmp_path / f"recipe-{data.name}"
        assert main(["recipe", "--train-data", str(data), "--train-split", "test", "--heldout-data", str(data),
                     "--base-model", str(tiny_cross_encoder), "--out", str(out), "--heldout-queries", "8",
                     "--max-length", "64", "--batch-size", "4", "--dev-queries", "8", "--dev-retrieve-k", "10",
                     "--retrieve-k", "30", "--num-negatives", "4", "--epochs", "1", "-q"]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
        record = out / "model" / FUSION_FILE
        records.append(record.read_text() if record.is_file() else None)
        assert set(json.loads((out / "heldout_query_ids.json").read_text())) == heldout
    original, altered = reports
    assert original["evaluation"]["measures"] != altered["evaluation"]["measures"]  # the change reached the figures
    assert original["fusion_choice"] == altered["fusion_choice"]  # every dev figure of the grid, to the last bit
    assert records[0] == records[1]


@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint(tmp_path, small_beir, tiny_cross_encoder):
    import datasets

    from rerank.training import train_cross_encoder

    rows = [{"query": q, "docs": d, "labels": [int(x) for x in labels.tolist()]}
            for q, d, labels in zip(BATCH_QUERIES * 4, BATCH_DOCS * 4, BATCH_LABELS * 4)]
    dataset = datasets.Dataset.from_list(rows)
    config = TrainingConfig(batch_size=2, eval_steps=2, max_length=32, epochs=1)
    import shutil

    def classifier_bias(model):
        # by parameter name, not by file layout: where sentence-transformers keeps the weights is its own affair
        return next(p for name, p in model.named_parameters() if name.endswith("classifier.bias"))

    first = train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / "m", config)
    checkpoint = tmp_path / "m" / "checkpoints" / "checkpoint-4"  # the Trainer's checkpoint-<global step>
    assert first.steps == 4 and checkpoint.is_dir()
    # A copy whose checkpoint weights are marked: a run that really resumes carries the mark into its final
    # model; one that starts over from the base model does not. (Step counts alone cannot tell: both end at 8.)
    shutil.copytree(tmp_path / "m", tmp_path / "marked")
    marked_checkpoint = STCrossEncoder(str(tmp_path / "marked" / "checkpoints" / "checkpoint-4"))
    with torch.no_grad():
        classifier_bias(marked_checkpoint).add_(5.0)
    marked_checkpoint.save_pretrained(str(tmp_path / "marked" / "checkpoints" / "checkpoint-4"))
    longer = TrainingConfig(batch_size=2, eval_steps=2, max_length=32, epochs=2)
    second = train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / "m", longer, resume=True)
    marked = train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / "marked", longer, resume=True)
    assert second.steps == marked.steps == 8
    bias = classifier_bias(STCrossEncoder(str(tmp_path / "m")))
    marked_bias = classifier_bias(STCrossEncoder(str(tmp_path / "marked")))
    assert float(marked_bias.detach() - bias.detach()) == pytest.approx(5.0, abs=0.5)  # lr 1e-4 over 4 steps moves it far less


def _samples(scifact, count=12, depth=8, with_collection=False):
    from pipelines.mining import dev_samples
    from pipelines.retrieve_rerank import first_stage_run
    from retrieval.bm25 import InMemoryBM25
    from retrieval.corpus import load_beir

    collection = load_beir(scifact, "train")
    queries = collection.queries[:60]
    run = first_stage_run(InMemoryBM25(collection.documents), queries, depth)
    samples = dev_samples(queries, collection.qrels, run, collection.texts(), depth)
    complete = [s for s in samples if all(p in s["documents"] for p in s["positive"])][:count]
    missing = [s for s in samples if not all(p in s["documents"] for p in s["positive"])][:count]
    if with_collection:
        return complete, missing, collection, run
    return complete, missing


def _best_first(run: dict[str, dict[str, float]]) -> dict[str, list[Hit]]:
    """An ir-measures style run (query → doc → score) as hits, best first: what run_agreement's helpers read."""
    return {query_id: [Hit(doc_id, score, rank) for rank, (doc_id, score) in
                       enumerate(sorted(scored.items(), key=lambda item: -item[1]), start=1)]
            for query_id, scored in run.items()}


def _ndcg10_on_collection_ids(model, samples, collection, first_stage, judged_only_retrieved=False):
    """The oracle: nDCG@10 by ir-measures of the model's scores for each sample's first-stage documents,
    keyed by the collection's own document ids and judged by the collection's own qrels (positives the first
    stage missed stay in the qrels unless ``judged_only_retrieved``)."""
    import ir_measures

    texts = collection.texts()
    pairs, keys = [], []
    for sample in samples:
        for hit in first_stage[sample["query_id"]]:
            pairs.append((sample["query"], texts[hit.doc_id]))
            keys.append((sample["query_id"], hit.doc_id))
    scores = model.predict(pairs, batch_size=64, show_progress_bar=False)
    run: dict[str, dict[str, float]] = {}
    for (qid, doc_id), score in zip(keys, scores):
        run.setdefault(qid, {})[doc_id] = float(score)
    # the evaluator under test scores in other batches: its nDCG@10 equals this only where no two documents of
    # a query are closer than the reproducibility bound allows (what the promise keeps in order)
    assert near_ties(_best_first(run)) == 0
    qrels = {s["query_id"]: {d: g for d, g in collection.qrels[s["query_id"]].items()
                             if not judged_only_retrieved or d in run[s["query_id"]]} for s in samples}
    ndcg = ir_measures.nDCG @ 10
    return float(ir_measures.calc_aggregate([ndcg], qrels, run)[ndcg])


@pytest.mark.floats
def test_dev_evaluation_equals_ir_measures_and_counts_missed_positives(scifact, spread_cross_encoder):
    from rerank.dev_evaluation import dev_evaluator_class
    from rerank.passages import PassageConfig

    complete, missing, collection, first_stage = _samples(scifact, with_collection=True)
    assert len(complete) >= 8 and len(missing) >= 4
    model = STCrossEncoder(str(spread_cross_encoder), max_length=64, activation_fn=torch.nn.Identity())
    model.eval()
    ours = dev_evaluator_class()(complete, 64, PassageConfig())(model)["dev_ndcg@10"]
    assert ours == pytest.approx(_ndcg10_on_collection_ids(model, complete, collection, first_stage), abs=1e-6)
    # a positive the first stage missed counts in the ideal ranking: the oracle keeps it in the qrels
    ours_missing = dev_evaluator_class()(missing, 64, PassageConfig())(model)["dev_ndcg@10"]
    oracle = _ndcg10_on_collection_ids(model, missing, collection, first_stage)
    assert ours_missing == pytest.approx(oracle, abs=1e-6)
    # and the check can fail: judged only on what the first stage found, the same scores give a higher nDCG@10
    assert oracle < _ndcg10_on_collection_ids(model, missing, collection, first_stage, judged_only_retrieved=True)


@pytest.mark.slow
def test_training_stops_early_saves_its_settings_log_and_curve(scifact, tiny_cross_encoder, tmp_path):
    import datasets

    from rerank.cross_encoder import CrossEncoder
    from rerank.passages import RerankerSettings
    from rerank.training import CURVE_FILE, LOG_FILE, train_cross_encoder

    complete, _ = _samples(scifact, count=6, depth=5)
    rows = [{"query": q, "docs": d, "labels": [int(x) for x in labels.tolist()]}
            for q, d, labels in zip(BATCH_QUERIES * 8, BATCH_DOCS * 8, BATCH_LABELS * 8)]
    dataset = datasets.Dataset.from_list(rows)
    # lr 0: dev nDCG@10 never improves, so patience 2 stops after the third evaluation (step 3 of 8)
    frozen = TrainingConfig(batch_size=2, eval_steps=1, max_length=160, epochs=1, lr=0.0, early_stopping_patience=2,
                            passages="maxp", logging_steps=1)
    result = train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / "m", frozen, dev_samples=complete)
    assert result.steps == 3
    assert RerankerSettings.load(tmp_path / "m").max_length == 160
    assert CrossEncoder(str(tmp_path / "m")).passages.mode == "maxp"
    log = json.loads((tmp_path / "m" / LOG_FILE).read_text())
    assert len([e for e in log if "eval_dev_ndcg@10" in e]) == 3
    assert (tmp_path / "m" / CURVE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    patient = TrainingConfig(**{**frozen.__dict__, "early_stopping_patience": None})
    assert train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / "n", patient, complete).steps == 8


def test_best_windows_pick_the_window_sharing_most_query_words(tiny_cross_encoder):
    import datasets
    from transformers import AutoTokenizer

    from rerank.training import best_windows

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_cross_encoder))
    filler = " ".join(["the ship sailed on"] * 60)
    doc = f"{filler} vitamin c deficiency causes scurvy in sailors {filler}"
    config = TrainingConfig(max_length=200, passages="maxp")
    rows = datasets.Dataset.from_list([{"query": "does vitamin c deficiency cause scurvy", "docs": [doc, "short"],
                                        "labels": [1, 0]}])
    picked = best_windows(rows, tokenizer, config)[0]
    assert "vitamin c deficiency causes scurvy" in picked["docs"][0] and len(picked["docs"][0]) < len(doc) / 2
    assert picked["docs"][1] == "short" and picked["labels"] == [1, 0]


@pytest.mark.slow
def test_mine_holds_out_a_dev_split_that_train_uses_by_default(small_beir, tiny_cross_encoder, tmp_path, caplog,
                                                               capsys):
    import logging

    from pipelines.cli import main

    mined = tmp_path / "mined"
    assert main(["mine", "--data", str(small_beir), "--split", "test", "--out", str(mined), "--retrieve-k", "20",
                 "--dev-retrieve-k", "10", "-q"]) == 0
    dev = [json.loads(line) for line in (mined / "dev_samples.jsonl").read_text().splitlines()]
    config = json.loads((mined / "mining_config.json").read_text())
    assert len(dev) == 6 == len(config["dev_queries"])  # min(100, 30 // 5)
    assert all(len(s["documents"]) == 10 and s["positive"] for s in dev)
    import datasets

    trained_on = set(datasets.load_from_disk(str(mined))["query"])
    assert not trained_on & {s["query"] for s in dev}
    with caplog.at_level(logging.INFO):
        assert main(["train", "--dataset", str(mined), "--base-model", str(tiny_cross_encoder), "--out",
                     str(tmp_path / "model"), "--max-length", "64", "--batch-size", "8", "--max-steps", "12",
                     "--bf16", "false"]) == 0
    assert "dev split: 6 queries held out by 'esrerank mine'" in caplog.text
    log = json.loads((tmp_path / "model" / "training_log.json").read_text())
    evaluations = [entry for entry in log if "eval_dev_ndcg@10" in entry]
    assert evaluations
    # the last line is the verdict: the best dev nDCG@10 against the first stage's on the same candidates
    best = max(e["eval_dev_ndcg@10"] for e in evaluations)
    first_stage = evaluations[0]["eval_dev_first_stage_ndcg@10"]
    verdict = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"best dev nDCG@10 {best:.4f} against the first stage's {first_stage:.4f}" in verdict
    assert verdict.startswith("WARNING: ") == (best <= first_stage)


def test_budget_and_batch_follow_the_number_of_training_queries():
    from rerank.training_config import auto_batch_size

    # about one query a step per 128 training queries, from 2 to 16
    assert [auto_batch_size(n) for n in (10, 300, 509, 1000, 5000, 500_000)] == [2, 2, 4, 8, 16, 16]
    config = TrainingConfig()
    assert config.steps_for(509) == (4, 1200, 64)  # a budget of updates, not one epoch; 2 dev evaluations an epoch
    assert config.steps_for(100_000) == (16, 1200, 64)  # at most 64 updates between dev evaluations
    capped = TrainingConfig(epochs=2, batch_size=8)
    assert capped.steps_for(100) == (8, 26, 6)  # 13 steps an epoch, two epochs
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainingConfig(lr_schedule="step")


@pytest.mark.floats
def test_margin_mse_equals_sentence_transformers_on_teacher_margins(tiny_cross_encoder):
    import datasets

    from rerank.training import margin_rows

    model = STCrossEncoder(str(tiny_cross_encoder), max_length=32, activation_fn=torch.nn.Identity())
    model.eval()
    listed = datasets.Dataset.from_list([
        {"query": "q1", "docs": ["a", "b", "c"], "labels": [0.5, 2.0, -1.0]},
        {"query": "q2", "docs": ["d", "e", "f", "g"], "labels": [3.0, 1.0, 0.0, 2.5]}])
    rows = margin_rows(listed)
    # the teacher's best first, the others in mined order, every row as wide as the shortest list
    assert rows[0] == {"query": "q1", "positive": "b", "negative_1": "a", "negative_2": "c", "label": [2.0, 0.5, -1.0]}
    assert rows[1] == {"query": "q2", "positive": "d", "negative_1": "e", "negative_2": "f", "label": [3.0, 1.0, 0.0]}
    inputs = [rows["query"], rows["positive"], rows["negative_1"], rows["negative_2"]]
    labels = torch.tensor(rows["label"])
    ours = make_loss(model, TrainingConfig(loss="margin-mse"))
    with torch.no_grad():
        a, b = ours(inputs, labels), losses.MarginMSELoss(model)(inputs, labels)
    assert type(ours) is losses.MarginMSELoss and float(a) == pytest.approx(float(b), rel=1e-6) and float(a) > 0


def _teacher_and_rows(tiny_cross_encoder, tmp_path):
    """A teacher cross-encoder built here (the tiny model with a different head) and mined-like lists."""
    import datasets

    teacher_dir = tmp_path / "teacher"
    teacher = STCrossEncoder(str(tiny_cross_encoder), activation_fn=torch.nn.Identity())
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in teacher.model.named_parameters():
            if name.startswith("classifier"):
                parameter.normal_(0, 2.0)  # margins large enough that learning them shows
    teacher.save_pretrained(str(teacher_dir))
    words = ["scurvy", "vitamin", "citrus", "ships", "sailors", "bananas", "saturation", "length", "terms", "k1"]
    rng = np.random.default_rng(0)
    rows = [{"query": " ".join(rng.choice(words, 2)), "docs": [" ".join(rng.choice(words, 6)) for _ in range(5)],
             "labels": [1, 0, 0, 0, 0]} for _ in range(24)]
    return teacher_dir, datasets.Dataset.from_list(rows)


def _margin_error(model_dir, teacher_dir, rows) -> float:
    from rerank.cross_encoder import CrossEncoder

    pairs = [(row["query"], doc) for row in rows for doc in row["docs"]]
    student = CrossEncoder(str(model_dir), dtype="float32", max_length=32).predict(pairs).reshape(len(rows), -1)
    teacher = CrossEncoder(str(teacher_dir), dtype="float32", max_length=32).predict(pairs).reshape(len(rows), -1)
    return float(np.mean(((student[:, :1] - student[:, 1:]) - (teacher[:, :1] - teacher[:, 1:])) ** 2))


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["margin-mse", "listnet"])
def test_distillation_learns_the_teachers_margins(tiny_cross_encoder, tmp_path, loss):
    from rerank.cross_encoder import CrossEncoder
    from rerank.training import teacher_labels, train_cross_encoder

    teacher_dir, rows = _teacher_and_rows(tiny_cross_encoder, tmp_path)
    teacher = CrossEncoder(str(teacher_dir), dtype="float32", max_length=32)
    relabelled = teacher_labels(rows, teacher)
    expected = teacher.predict([(rows[0]["query"], doc) for doc in rows[0]["docs"]])
    np.testing.assert_allclose(relabelled[0]["labels"], expected, rtol=1e-5)  # the labels are the teacher's scores
    config = TrainingConfig(loss=loss, batch_size=4, max_steps=60, lr=2e-3, warmup_steps=0, max_length=32,
                            bf16="false", freeze_embeddings=False)
    before = _margin_error(tiny_cross_encoder, teacher_dir, rows)
    train_cross_encoder(rows, str(tiny_cross_encoder), tmp_path / "student", config, teacher=teacher)
    after = _margin_error(tmp_path / "student", teacher_dir, rows)
    assert after < 0.5 * before, (before, after)  # the student moved towards the teacher's margins
    with pytest.raises(ValueError, match="distillation"):
        train_cross_encoder(rows, str(tiny_cross_encoder), tmp_path / "x", TrainingConfig(loss="lambda"),
                            teacher=teacher)


@pytest.mark.slow
def test_learning_rate_holds_its_peak_after_warmup_and_steps_are_timed(tiny_cross_encoder, tmp_path):
    import datasets

    from rerank.training import train_cross_encoder

    rows = [{"query": q, "docs": d, "labels": [int(x) for x in labels.tolist()]}
            for q, d, labels in zip(BATCH_QUERIES * 6, BATCH_DOCS * 6, BATCH_LABELS * 6)]
    dataset = datasets.Dataset.from_list(rows)
    common = dict(batch_size=2, max_steps=12, warmup_steps=4, lr=1e-4, max_length=32, bf16="false", logging_steps=1)
    rates = {}
    for schedule in ("constant", "linear"):
        result = train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / schedule,
                                     TrainingConfig(lr_schedule=schedule, **common))
        log = json.loads((tmp_path / schedule / "training_log.json").read_text())
        rates[schedule] = [e["learning_rate"] for e in log if "learning_rate" in e]
        assert result.steps == 12 and result.seconds_per_step is not None and result.seconds_per_step > 0
        saved = json.loads((tmp_path / schedule / "esrerank_training.json").read_text())["result"]
        assert saved["epochs"] == pytest.approx(2.0) and saved["seconds_per_epoch"] == pytest.approx(
            6 * saved["seconds_per_step"])
    assert rates["constant"][4:] == [pytest.approx(1e-4)] * 8  # never decays while early stopping decides
    assert rates["linear"][-1] < 2e-5 and rates["linear"][4] == pytest.approx(1e-4, rel=0.2)


def test_verdict_compares_with_the_first_stage_and_warns_when_not_above():
    from rerank.training import TrainingResult

    def result(best, first):
        return TrainingResult("m", None, best, 10, 1.0, 100, 4, 0.5, first)

    assert result(0.7312, 0.6650).verdict() == ("best dev nDCG@10 0.7312 against the first stage's 0.6650 on the "
                                                "same candidates (+0.0662)")
    assert result(0.60, 0.66).verdict().startswith("WARNING: the reranker is not above the first stage")
    assert "no dev evaluation" in result(None, None).verdict()
    assert result(0.5, 0.5).epochs == 0.4 and result(0.5, 0.5).seconds_per_epoch == pytest.approx(12.5)


@pytest.mark.slow
def test_train_command_distils_a_teacher_with_margin_mse_by_default(tiny_cross_encoder, tmp_path, capsys):
    from pipelines.cli import main

    teacher_dir, rows = _teacher_and_rows(tiny_cross_encoder, tmp_path)
    rows.save_to_disk(str(tmp_path / "mined"))  # what 'esrerank mine' writes: labeled lists
    assert main(["train", "--dataset", str(tmp_path / "mined"), "--base-model", str(tiny_cross_encoder), "--out",
                 str(tmp_path / "student"), "--teacher", str(teacher_dir), "--max-steps", "4", "--max-length", "32",
                 "--bf16", "false"]) == 0
    saved = json.loads((tmp_path / "student" / "esrerank_training.json").read_text())
    assert saved["config"]["loss"] == "margin-mse" and saved["result"]["steps"] == 4
    printed = capsys.readouterr().out
    assert "trained 4 steps of 2" in printed and "no dev evaluation" in printed  # no dev split: said, not hidden
