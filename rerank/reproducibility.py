"""What esrerank promises about the scores of one job run two ways: the one statement README.md, docs/, the CLI
help and the docstrings point to, and the bound the tests assert.

**Byte for byte** — the same output file for the same inputs, model, dtype and runtime when the scores are
computed on the same CPU model (or GPU model), with the same torch thread count and the same chunking
(``--queries-per-chunk``). A job resumed on the same machine, and ``rerank --ray`` whose actors score with as
many threads (``--ray-cpus-per-actor``) as ``rerank --threads`` gives the single process, are this case.

**Within a bound** — everywhere else: another thread count; other batches (``--devices``, which gives each
process every n-th query; the service, whose dynamic batching mixes requests; a ``--score-cache`` filled by
another job); another CPU kind or GPU, a job resumed on another machine. Each float32 score then lies within
:data:`FLOAT32_SCORE_BOUND` × max(1, |score|) of the byte-for-byte job's, so two documents whose scores are
further apart than twice that keep their order; closer ones may swap. The bound is measured, not derived:
``python -m benchmarks.bench_reproducibility`` (docs/batch_rerank.md "Reproducibility" has the table).

Why sums differ at all: a float sum depends on the order of its terms. Matrix kernels split their sums by
thread count, by the vector width of the CPU (AVX2, AVX-512, AMX) and by the shape of the batch (a pair padded
to another length is a different matrix), and each split rounds differently in the last bits.
"""

from __future__ import annotations

FLOAT32_SCORE_BOUND = 1e-4
"""The largest difference between two float32 runs of one job (in units of max(1, |score|)) that esrerank
promises. Measured (docs/batch_rerank.md "Reproducibility"): at most 5.6e-8 with a fresh MiniLM-L6 head
(scores within ±0.06), and 9.9e-6 with that head scaled to a trained reranker's span (-4.5 … 11.4), where a
float's noise grows with the head's weights: the bound leaves room of about ten times the latter."""

PROMISE = ("the same output byte for byte for the same CPU model (or GPU model), thread count and chunking; "
           f"otherwise float32 scores within {FLOAT32_SCORE_BOUND:g} x max(1, |score|), documents further apart "
           "than twice that in the same order (docs/batch_rerank.md#reproducibility)")
"""The promise in one line, for CLI help."""

