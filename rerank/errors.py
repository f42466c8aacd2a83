"""Errors of the second stage, importable without torch. They derive from esrerank's one error root,
``retrieval.errors.EsrerankError`` (the only module of ``retrieval`` that ``rerank`` imports)."""

from retrieval.errors import EsrerankError, InputError


class ModelError(InputError):
    """The model cannot be used as a one-label cross-encoder; the message says why and where."""


class ServiceError(EsrerankError):
    """The reranking service cannot start (e.g. its port is taken)."""
