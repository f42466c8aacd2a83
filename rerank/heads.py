"""Turning a base encoder (no classification head) into a one-label cross-encoder to train."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def init_cross_encoder(base_model: str, out_dir, seed: int = 0) -> Path:
    """Save ``base_model`` with a fresh one-label classification head (seeded) to ``out_dir``, in the
    layout transformers, sentence-transformers and esrerank all load."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights were newly initialized" is the point here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(base_model), num_labels=1)
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    logger.info("saved %s with a fresh one-label head to %s", base_model, out_dir)
    return out_dir
