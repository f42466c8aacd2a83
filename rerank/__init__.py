"""Second stage: cross-encoder scoring and training.

Names are imported on first use, so that ``import rerank`` (and the CLI's start-up) does not pay for
importing torch and transformers until a model is needed.
"""

from importlib import import_module

DEFAULT_MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"

_LAZY = {"CrossEncoder": "cross_encoder", "init_cross_encoder": "heads"}

__all__ = ["CrossEncoder", "DEFAULT_MODEL", "init_cross_encoder"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'rerank' has no attribute {name!r}")
