"""The helper that decides the engine parity tests, on runs whose answer is known by construction."""

from __future__ import annotations

import pytest
from run_agreement import top_k_agreement

from retrieval.records import Hit


def run(*pairs):
    return [Hit(doc, score, rank) for rank, (doc, score) in enumerate(pairs, start=1)]


@pytest.mark.parametrize("a,b,same,same_up_to_ties", [
    (run(("d1", 3.0), ("d2", 2.0), ("d3", 1.0)), run(("d1", 3.0), ("d2", 2.0), ("d3", 1.0)), 1, 1),
    # equal scores may come in either order
    (run(("d1", 3.0), ("d2", 2.0), ("d3", 2.0)), run(("d1", 3.0), ("d3", 2.0), ("d2", 2.0)), 0, 1),
    # different scores may not
    (run(("d1", 3.0), ("d2", 2.0), ("d3", 1.0)), run(("d2", 3.0), ("d1", 2.0), ("d3", 1.0)), 0, 0),
    # a tie cut at k: the last group may hold different documents of the same score
    (run(("d1", 3.0), ("d2", 1.0), ("d3", 1.0)), run(("d1", 3.0), ("d2", 1.0), ("d4", 1.0)), 0, 1),
    # the same documents with one score off by more than the tolerance
    (run(("d1", 3.0), ("d2", 2.0)), run(("d1", 3.0), ("d2", 2.1)), 1, 0),
    # float32 rounding is within the tolerance
    (run(("d1", 3.0), ("d2", 2.0)), run(("d1", 3.0000001), ("d2", 2.0)), 1, 1),
    # a shorter list never agrees
    (run(("d1", 3.0), ("d2", 2.0)), run(("d1", 3.0)), 0, 0),
])
def test_agreement_on_known_cases(a, b, same, same_up_to_ties):
    agreement = top_k_agreement({"q": a}, {"q": b}, k=3)
    assert (agreement.same_top_k, agreement.same_up_to_ties) == (same, same_up_to_ties)


def test_relative_score_difference_and_missing_queries():
    agreement = top_k_agreement({"q1": run(("d1", 2.0)), "q2": run(("d2", 1.0))}, {"q1": run(("d1", 2.002))}, k=10)
    assert agreement.queries == 2 and agreement.same_up_to_ties == 0  # q2 is missing from the second run
    assert agreement.max_relative_score_diff == pytest.approx(0.001)


@pytest.mark.parametrize("other,problem", [
    (run(("d1", 3.0), ("d2", 2.0), ("d3", 2.0)), None),  # equal
    # within the bound (1e-5 x max(1, |score|)), and near-ties (closer than twice it) may swap
    (run(("d1", 3.00002), ("d3", 2.000004), ("d2", 1.999998)), None),
    (run(("d1", 3.0001), ("d2", 2.0), ("d3", 2.0)), "d1 scored"),  # 3.3e-5 relative: beyond
    (run(("d2", 2.0), ("d1", 1.99998), ("d3", 2.0)), "swapped"),  # 1.0 apart in the reference, swapped
    (run(("d1", 3.0), ("d2", 2.0), ("d4", 2.0)), "other documents"),
])
def test_reproducibility_violations_on_known_cases(other, problem):
    from run_agreement import reproducibility_violations

    reference = {"q": run(("d1", 3.0), ("d2", 2.0), ("d3", 2.0))}
    found = reproducibility_violations(reference, {"q": other}, bound=1e-5)
    if problem is None:
        assert found == []
    else:
        assert any(problem in entry for entry in found), found
