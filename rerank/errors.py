"""Errors of the second stage, importable without torch."""


class ModelError(ValueError):
    """The model cannot be used as a one-label cross-encoder; the message says why and where."""
