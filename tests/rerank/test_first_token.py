"""The last layer computed for the first token only must give the unmodified model's scores."""

import copy

import pytest
import torch
from run_agreement import assert_scores_within_bound
from sentence_transformers import CrossEncoder as SentenceTransformersCrossEncoder
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from rerank.cross_encoder import CrossEncoder
from rerank.first_token import FirstTokenLayer, first_token_last_layer, first_token_only
from rerank.model_loading import Runtime

SIZES = dict(vocab_size=200, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=64, num_labels=1)
MODELS = {"bert": (BertConfig, BertForSequenceClassification),
          "roberta": (RobertaConfig, RobertaForSequenceClassification),
          "xlm-roberta": (XLMRobertaConfig, XLMRobertaForSequenceClassification)}


def padded_batch(seed: int = 0):
    """Five sequences of different lengths, right-padded: the masks must keep padding out of attention."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [20, 3, 11, 20, 7]
    input_ids = torch.randint(5, 200, (len(lengths), max(lengths)), generator=generator)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        input_ids[row, length:] = 1  # pad id of both configs
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", list(MODELS))
def test_first_token_layer_gives_the_full_models_logits(model_type, attention):
    config_class, model_class = MODELS[model_type]
    torch.manual_seed(0)
    full = model_class(config_class(**SIZES, attn_implementation=attention)).eval()
    cut = copy.deepcopy(full)
    assert first_token_last_layer(cut)
    base = getattr(cut, "bert", None) or cut.roberta
    assert isinstance(base.encoder.layer[-1], FirstTokenLayer)
    assert not isinstance(base.encoder.layer[0], FirstTokenLayer)
    batch = padded_batch()
    with torch.inference_mode():
        expected = full(**batch).logits
        got = cut(**batch).logits
        alone = cut(**{name: tensor[1:2, :3] for name, tensor in batch.items()}).logits  # no padding at all
    # other matrix shapes (the cut, no padding): the same scores within the reproducibility bound
    assert_scores_within_bound(got.numpy(), expected.numpy())
    assert_scores_within_bound(alone.numpy(), expected[1:2].numpy())
    assert first_token_last_layer(cut)  # applying it twice changes nothing
    assert not isinstance(base.encoder.layer[-1].layer, FirstTokenLayer)


def test_first_token_only_cuts_inside_the_block_and_puts_the_layer_back():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(**SIZES)).eval()
    last, keys = model.bert.encoder.layer[-1], list(model.state_dict())
    batch = padded_batch()
    with torch.inference_mode():
        expected = model(**batch).logits
        with first_token_only(model):
            assert isinstance(model.bert.encoder.layer[-1], FirstTokenLayer)
            got = model(**batch).logits
    assert model.bert.encoder.layer[-1] is last and list(model.state_dict()) == keys  # saved as it was
    assert_scores_within_bound(got.numpy(), expected.numpy())
    with pytest.raises(RuntimeError), first_token_only(model):
        raise RuntimeError("an error inside the block")
    assert model.bert.encoder.layer[-1] is last  # put back on errors too


def test_other_architectures_run_unchanged():
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=200, dim=32, n_layers=2, n_heads=4,
                                                                 hidden_dim=64, num_labels=1)).eval()
    assert not first_token_last_layer(model)


@pytest.mark.floats
def test_minilm_scores_with_and_without_the_cut_equal_sentence_transformers(minilm_cross_encoder):
    pairs = [("what is bm25", "BM25 is a ranking function used by search engines " * n) for n in range(1, 30)]
    pairs += [("a much longer query about ranking functions and search", "bananas"), ("", "empty query")]
    reference = SentenceTransformersCrossEncoder(str(minilm_cross_encoder), max_length=128,
                                                 activation_fn=torch.nn.Identity()).predict(pairs, batch_size=16)
    cut = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32")
    full = CrossEncoder(str(minilm_cross_encoder), max_length=128, dtype="float32",
                        runtime=Runtime(first_token_only=False))
    assert isinstance(cut.model.bert.encoder.layer[-1], FirstTokenLayer)
    assert not isinstance(full.model.bert.encoder.layer[-1], FirstTokenLayer)
    assert_scores_within_bound(cut.predict(pairs), reference)
    assert_scores_within_bound(full.predict(pairs), reference)


def test_a_two_dimensional_mask_means_the_same_as_the_four_dimensional_one():
    torch.manual_seed(0)
    layer = FirstTokenLayer(BertForSequenceClassification(BertConfig(**SIZES)).eval().bert.encoder.layer[-1])
    hidden = torch.randn(5, 20, 32)
    mask = padded_batch()["attention_mask"]
    with torch.inference_mode():
        from_2d = layer(hidden, mask)
        from_4d = layer(hidden, mask[:, None, None, :].expand(5, 1, 20, 20).bool())
        unmasked = layer(hidden, None)
    assert from_2d.shape == (5, 1, 32)
    torch.testing.assert_close(from_2d, from_4d, atol=0, rtol=0)
    assert not torch.allclose(from_2d[1], unmasked[1])  # padding kept out of attention
