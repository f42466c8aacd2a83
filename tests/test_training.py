"""Training wiring: sentence-transformers' own losses, the trainer, the saved model, the recipe."""

import json

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder as STCrossEncoder
from sentence_transformers.cross_encoder import losses

from rerank.training import TrainingConfig, load_model, make_loss, to_pairs

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


def test_bce_on_pairs_equals_sentence_transformers(tiny_cross_encoder):
    import datasets

    model = STCrossEncoder(str(tiny_cross_encoder), max_length=32, activation_fn=torch.nn.Identity())
    model.eval()
    listed = datasets.Dataset.from_list([{"query": q, "docs": d, "labels": l.tolist()}
                                         for q, d, l in zip(BATCH_QUERIES, BATCH_DOCS, BATCH_LABELS)])
    pairs = to_pairs(listed)
    assert len(pairs) == 7 and pairs[0] == {"query": BATCH_QUERIES[0], "passage": BATCH_DOCS[0][0], "label": 1.0}
    ours = make_loss(model, TrainingConfig(loss="bce"))
    with torch.no_grad():
        a = ours([pairs["query"], pairs["passage"]], torch.tensor(pairs["label"]))
        b = losses.BinaryCrossEntropyLoss(model)([pairs["query"], pairs["passage"]], torch.tensor(pairs["label"]))
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_base_encoder_gets_a_fresh_head_and_attention_dropout_is_off():
    from rerank.heads import local_minilm_path

    model = load_model(str(local_minilm_path()), TrainingConfig(max_length=128))
    assert model.num_labels == 1
    config = model[0].auto_model.config if hasattr(model[0], "auto_model") else model.model.config
    assert config.attention_probs_dropout_prob == 0.0 and config.hidden_dropout_prob > 0


@pytest.mark.slow
def test_recipe_end_to_end_on_a_tiny_model(small_beir, tiny_cross_encoder, tmp_path, capsys):
    from pipelines.cli import main
    from rerank.cross_encoder import CrossEncoder

    out = tmp_path / "recipe"
    code = main(["recipe", "--train-data", str(small_beir), "--train-split", "test", "--eval-data", str(small_beir),
                 "--base-model", str(tiny_cross_encoder), "--out", str(out), "--dev-queries", "8",
                 "--max-length", "64", "--batch-size", "4", "--train-eval-queries", "8", "--train-eval-depth", "10",
                 "--depth", "30", "--num-negatives", "4", "--epochs", "1", "-q"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["mining"]["kept"] == 22 and report["training"]["steps"] == 6
    assert len(json.loads((out / "dev_query_ids.json").read_text())) == 8
    measures = report["evaluation"]["measures"]
    assert set(measures) == {"bm25", "reranked"} and 0 <= measures["reranked"]["nDCG@10"] <= 1
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
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(ours, raw.numpy(), atol=1e-5)


@pytest.mark.slow
def test_training_resumes_from_its_last_checkpoint(tmp_path, small_beir, tiny_cross_encoder):
    import datasets

    from rerank.training import train_cross_encoder

    rows = [{"query": q, "docs": d, "labels": [int(x) for x in l.tolist()]}
            for q, d, l in zip(BATCH_QUERIES * 4, BATCH_DOCS * 4, BATCH_LABELS * 4)]
    dataset = datasets.Dataset.from_list(rows)
    config = TrainingConfig(batch_size=2, eval_steps=2, max_length=32, epochs=1)
    first = train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / "m", config)
    assert first.steps == 4 and (tmp_path / "m" / "checkpoints" / "checkpoint-4").is_dir()
    longer = TrainingConfig(batch_size=2, eval_steps=2, max_length=32, epochs=2)
    second = train_cross_encoder(dataset, str(tiny_cross_encoder), tmp_path / "m", longer, resume=True)
    assert second.steps == 8  # went on from step 4 rather than starting over
