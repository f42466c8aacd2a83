"""Effectiveness measures with ``ir-measures`` and a paired significance test between two runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import ir_measures
import numpy as np
from scipy import stats

from retrieval.records import Hit

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@100", "R@1000", "AP")
# the two systems every evaluation result names: whatever the first stage was (BM25 in memory, an engine
# query, a run file), and its reranking
FIRST_STAGE, RERANKED = "first_stage", "reranked"


def per_query_scores(run: Mapping[str, Sequence[Hit]], qrels: Mapping[str, Mapping[str, int]],
                     measures: Sequence[str] = DEFAULT_MEASURES) -> dict[str, dict[str, float]]:
    """measure → query id → value, for every judged query, computed by ir-measures. A judged query the
    run has no hits for scores 0 (as ``trec_eval -c``), rather than being left out of the mean.

    Returns:
        ``{measure: {query_id: value}}`` for each of ``measures`` (default nDCG@10, RR@10, R@100, R@1000, AP).

    Example::

        scores = per_query_scores(run, collection.qrels)
        mean_scores(scores)["nDCG@10"]
    """
    parsed = {name: ir_measures.parse_measure(name) for name in measures}
    by_measure = {name: dict.fromkeys(qrels, 0.0) for name in measures}
    names = {measure: name for name, measure in parsed.items()}
    run_dict = {qid: {hit.doc_id: float(hit.score) for hit in hits} for qid, hits in run.items() if qid in qrels}
    qrels_dict = {qid: dict(judged) for qid, judged in qrels.items()}
    for result in ir_measures.iter_calc(list(parsed.values()), qrels_dict, run_dict):
        by_measure[names[result.measure]][result.query_id] = float(result.value)
    return by_measure


def mean_scores(per_query: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Each measure's mean over the judged queries: ``{measure: mean}``."""
    return {name: float(np.mean(list(values.values()))) if values else 0.0 for name, values in per_query.items()}


@dataclass(frozen=True)
class Comparison:
    measure: str
    baseline: float
    system: float
    p_value: float  # paired two-sided t-test over queries; nan when the two runs are identical
    baseline_ci: tuple[float, float] | None = None  # 95% bootstrap interval of the mean over queries
    system_ci: tuple[float, float] | None = None

    @property
    def delta(self) -> float:
        return self.system - self.baseline


def compare(baseline: Mapping[str, Mapping[str, float]], system: Mapping[str, Mapping[str, float]]) -> list[Comparison]:
    """Per measure: both means and the p-value of a paired t-test over the shared queries (the test
    PyTerrier's ``Experiment`` reports).

    Returns:
        One :class:`Comparison` per measure (``measure``, ``baseline``, ``system``, ``p_value``, ``delta``);
        ``p_value`` is nan when the two runs score the same on every query.
    """
    comparisons = []
    for name, base_values in baseline.items():
        queries = sorted(base_values)
        a = np.array([base_values[q] for q in queries])
        b = np.array([system[name][q] for q in queries])
        p_value = float(stats.ttest_rel(b, a).pvalue) if len(queries) > 1 and np.any(a != b) else math.nan
        comparisons.append(Comparison(name, float(a.mean()), float(b.mean()), p_value, bootstrap_ci(a),
                                      bootstrap_ci(b)))
    return comparisons


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over queries (resampling queries with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def format_table(comparisons: Sequence[Comparison], baseline_name: str = "BM25", system_name: str = "reranked",
                 alpha: float = 0.05) -> str:
    def interval(ci) -> str:
        return "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"

    header = (f"{'measure':<9} {baseline_name:>9} {'95% CI':>14} {system_name:>9} {'95% CI':>14} {'delta':>8} "
              f"{'p (paired t)':>13}")
    lines = [header, "-" * len(header)]
    for c in comparisons:
        mark = " *" if c.p_value < alpha else ""
        p_text = "n/a" if math.isnan(c.p_value) else f"{c.p_value:.4f}"
        lines.append(f"{c.measure:<9} {c.baseline:>9.4f} {interval(c.baseline_ci):>14} {c.system:>9.4f} "
                     f"{interval(c.system_ci):>14} {c.delta:>+8.4f} {p_text:>13}{mark}")
    lines.append(f"* significant at p < {alpha}; 95% CI: bootstrap over queries")
    return "\n".join(lines)


def format_single(scores: Mapping[str, float], name: str = "BM25") -> str:
    lines = [f"{'measure':<9} {name:>9}", "-" * 19]
    lines += [f"{measure:<9} {value:>9.4f}" for measure, value in scores.items()]
    return "\n".join(lines)
