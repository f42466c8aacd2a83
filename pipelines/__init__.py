"""Composition: retrieve → rerank, evaluation runs, and the ``esrerank`` command line."""

from .evaluation import compare, mean_scores, per_query_scores
from .retrieve_rerank import RetrieveRerank
from .runs import read_trec_run, write_trec_run

__all__ = ["RetrieveRerank", "compare", "mean_scores", "per_query_scores", "read_trec_run", "write_trec_run"]
