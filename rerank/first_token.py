"""The last encoder layer computed for the first token only: exact, and a sixth less work for a 6-layer model.

A BERT-style cross-encoder's score reads one vector, the last layer's output at the first token ([CLS],
``<s>``). Every other token's last-layer output is computed and thrown away, yet that layer's query
projection, attention output projection and feed-forward block (about 80% of its matrix work) are
per-token: only the first token's rows are needed. Its keys and values still come from every token,
since the first token attends to all of them. So the last layer here takes the full hidden states and
returns a sequence of length 1; the pooler or classification head reads position 0 as before.

The arithmetic for the first token is the same as in the full layer (the same weights, the same rows), so
scores equal the full model's up to the last bits a matrix product can differ in between batch shapes
(measured: ≤ 1e-6 on MiniLM logits; tests compare with the unmodified model).

Applied to BERT and RoBERTa/XLM-RoBERTa sequence classifiers (the architectures of the common MS MARCO and
BGE cross-encoders) whose layers have the standard submodules; any other model runs unchanged.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from torch import nn

logger = logging.getLogger(__name__)

# model_type -> attribute holding the base model, whose classifier reads the first token only
SUPPORTED = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}


class FirstTokenLayer(nn.Module):
    """Wraps a BERT/RoBERTa encoder layer: the same weights, output only at position 0."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args, **kwargs):
        attention = self.layer.attention.self
        batch = hidden_states.shape[0]
        heads, head_size = attention.num_attention_heads, attention.attention_head_size
        first = hidden_states[:, :1]
        query = attention.query(first).view(batch, 1, heads, head_size).transpose(1, 2)
        key = attention.key(hidden_states).view(batch, -1, heads, head_size).transpose(1, 2)
        value = attention.value(hidden_states).view(batch, -1, heads, head_size).transpose(1, 2)
        if attention_mask is not None:
            if attention_mask.dim() == 2:  # (batch, tokens) of 1/0, as some attention backends take it
                attention_mask = attention_mask[:, None, None, :].bool()
            elif attention_mask.dim() == 4:
                attention_mask = attention_mask[:, :, :1]  # the first token's row (bool or additive, as given)
            else:
                raise ValueError(f"unexpected attention mask shape {tuple(attention_mask.shape)}")
        context = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                             scale=attention.scaling)
        context = context.transpose(1, 2).reshape(batch, 1, heads * head_size)
        attended = self.layer.attention.output(context, first)
        return self.layer.output(self.layer.intermediate(attended), attended)


def _encoder_layers(model: nn.Module):
    """The encoder's list of layers of a supported architecture, else None."""
    base = getattr(model, SUPPORTED.get(model.config.model_type, ""), None)
    return getattr(getattr(base, "encoder", None), "layer", None)


def first_token_last_layer(model: nn.Module) -> bool:
    """Replace ``model``'s last encoder layer by a ``FirstTokenLayer`` where the architecture allows it;
    returns whether it did. For inference only (the model is in eval mode: no dropout in the wrapper)."""
    config = model.config
    layers = _encoder_layers(model)
    if (layers is None or len(layers) == 0 or getattr(config, "is_decoder", False)
            or getattr(config, "add_cross_attention", False) or getattr(config, "chunk_size_feed_forward", 0)):
        return False
    last = layers[-1]
    if isinstance(last, FirstTokenLayer):
        return True
    attention = getattr(getattr(last, "attention", None), "self", None)
    if not all(hasattr(attention, name) for name in ("query", "key", "value", "num_attention_heads",
                                                     "attention_head_size", "scaling")) \
            or not all(hasattr(last, name) for name in ("intermediate", "output")):
        logger.debug("%s: last layer has an unexpected structure; computing it in full", config.model_type)
        return False
    layers[-1] = FirstTokenLayer(last)
    return True


@contextmanager
def first_token_only(model: nn.Module):
    """``first_token_last_layer`` for the duration of a ``with`` block, the original last layer put back
    after it: for scoring a model that is also trained or saved (the trainer's dev evaluation)."""
    layers = _encoder_layers(model)
    original = layers[-1] if layers is not None and len(layers) else None
    first_token_last_layer(model)
    try:
        yield model
    finally:
        if original is not None:
            layers[-1] = original
