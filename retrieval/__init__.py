"""First stage: BM25 engines, analyzers, corpus readers and indexing."""

from .analysis import english_analyzer, get_analyzer, standard_analyzer
from .bm25 import InMemoryBM25, TopKArrays
from .corpus import Collection, load_beir, load_collection, read_qrels
from .records import DataError, Document, Hit, Query

__all__ = ["InMemoryBM25", "TopKArrays", "Collection", "DataError", "Document", "Hit", "Query", "english_analyzer",
           "get_analyzer", "load_beir", "load_collection", "read_qrels", "standard_analyzer"]
