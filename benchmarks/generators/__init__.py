"""Seeded data the benchmarks run on, cut from the shared collections (``../shared/data``):

- :mod:`~benchmarks.generators.corpus_100k`: 100,000 passages and ~1,100 real queries (first-stage speed);
- :mod:`~benchmarks.generators.msmarco_like`: MS MARCO-like (query, passage) pairs (reranking speed);
- :mod:`~benchmarks.generators.msmarco_shaped`: an 8.8M-passage ``collection.tsv`` of MS MARCO's shape
  (``python -m benchmarks.generators.msmarco_shaped --out DIR``).
"""
