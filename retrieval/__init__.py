"""First stage: BM25 engines, analyzers, corpus readers and indexing.

Names are imported on first use, so that importing one small module (``retrieval.records``) does not
pay for numpy, scipy and numba. esrerank's errors are in the top-level module ``esrerank_errors``.
"""

from importlib import import_module

_LAZY = {"english_analyzer": "analysis", "get_analyzer": "analysis", "standard_analyzer": "analysis",
         "InMemoryBM25": "bm25", "TopKArrays": "bm25", "Collection": "corpus", "load_beir": "corpus",
         "load_collection": "corpus", "read_qrels": "corpus", "Document": "records", "Hit": "records",
         "Query": "records"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
