"""How far two runs agree: top-k identity per query, allowing for exact ties, and score differences; and
whether two computations of the same scores keep esrerank's reproducibility promise
(``rerank.reproducibility``). Test helpers (the engine parity tests and every test comparing scores
computed two ways decide by them); their own test is test_run_agreement.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from retrieval.records import Hit


@dataclass(frozen=True)
class Agreement:
    queries: int
    same_top_k: int  # identical doc ids in identical order
    same_up_to_ties: int  # identical once documents with equal scores may swap places
    max_relative_score_diff: float  # over documents both top-k lists hold

    @property
    def same_up_to_ties_share(self) -> float:
        return self.same_up_to_ties / self.queries if self.queries else 1.0


def _same_up_to_ties(a: Sequence[Hit], b: Sequence[Hit], rel_tol: float) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if abs(x.score - y.score) > rel_tol * max(abs(x.score), abs(y.score), 1e-9):
            return False
    # scores agree position by position; documents may differ only inside groups of equal scores
    def groups(hits):
        out, current, last = [], set(), None
        for hit in hits:
            if last is not None and abs(hit.score - last) > rel_tol * max(abs(last), 1e-9):
                out.append(current)
                current = set()
            current.add(hit.doc_id)
            last = hit.score
        out.append(current)
        return out
    ga, gb = groups(a), groups(b)
    # the last group may be cut at k differently on each side: only its size must match
    return len(ga) == len(gb) and ga[:-1] == gb[:-1] and len(ga[-1]) == len(gb[-1])


def top_k_agreement(run_a: Mapping[str, Sequence[Hit]], run_b: Mapping[str, Sequence[Hit]], k: int = 10,
                    rel_tol: float = 1e-5) -> Agreement:
    """Compare the top ``k`` of two runs over the queries of ``run_a``. ``rel_tol`` is how close two
    scores must be to count as the same score (engines score in float32)."""
    same = same_ties = 0
    max_diff = 0.0
    for query_id, hits_a in run_a.items():
        top_a, top_b = list(hits_a)[:k], list(run_b.get(query_id, []))[:k]
        same += [h.doc_id for h in top_a] == [h.doc_id for h in top_b]
        same_ties += _same_up_to_ties(top_a, top_b, rel_tol)
        scores_b = {h.doc_id: h.score for h in top_b}
        for hit in top_a:
            if hit.doc_id in scores_b:
                diff = abs(hit.score - scores_b[hit.doc_id]) / max(abs(hit.score), 1e-9)
                max_diff = max(max_diff, diff)
    return Agreement(len(run_a), same, same_ties, max_diff)


def _bound(bound: float | None) -> float:
    from rerank.reproducibility import FLOAT32_SCORE_BOUND

    return FLOAT32_SCORE_BOUND if bound is None else bound


def nearly_tied(higher: float, lower: float, bound: float | None = None) -> bool:
    """Whether two neighbouring scores are close enough (within twice the bound, × max(1, |score|)) for two
    computations within the reproducibility bound to put them in either order."""
    return higher - lower <= 2 * _bound(bound) * max(1.0, abs(higher), abs(lower))


def reproducibility_violations(reference: Mapping[str, Sequence[Hit]], other: Mapping[str, Sequence[Hit]],
                               bound: float | None = None) -> list[str]:
    """Where ``other`` breaks esrerank's reproducibility promise (``rerank.reproducibility``) against
    ``reference``, two runs of one job: the same queries and documents; each score within ``bound`` ×
    max(1, |score|) of the reference's (default: the library's float32 bound); and reference neighbours further
    apart than twice that in the same order. Empty when the promise holds; each entry names the query."""
    bound = _bound(bound)
    problems = []
    if list(reference) != list(other):
        problems.append(f"queries differ: {len(reference)} vs {len(other)}, or in another order")
    for query_id, hits in reference.items():
        theirs = list(other.get(query_id, []))
        scores = {hit.doc_id: hit.score for hit in theirs}
        if set(scores) != {hit.doc_id for hit in hits} or len(theirs) != len(hits):
            problems.append(f"{query_id}: other documents")
            continue
        for hit in hits:
            if abs(hit.score - scores[hit.doc_id]) > bound * max(1.0, abs(hit.score)):
                problems.append(f"{query_id}: {hit.doc_id} scored {hit.score!r} vs {scores[hit.doc_id]!r}")
        position = {hit.doc_id: i for i, hit in enumerate(theirs)}
        for first, second in zip(hits, hits[1:]):
            if not nearly_tied(first.score, second.score, bound) and position[first.doc_id] > position[second.doc_id]:
                problems.append(f"{query_id}: {first.doc_id} and {second.doc_id} swapped, {first.score - second.score:g} "
                                "apart")
    return problems


def assert_scores_within_bound(got, expected, bound: float | None = None) -> None:
    """The same scores computed two ways (other batches, threads, processes or kernels): each of ``got``
    within ``bound`` × max(1, |expected|) of ``expected`` (default: the library's float32 bound), the
    promise and nothing tighter."""
    import numpy as np

    bound = _bound(bound)
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    allowed = bound * np.maximum(1.0, np.abs(expected))
    beyond = np.flatnonzero(np.abs(got - expected) > allowed)
    assert beyond.size == 0, (f"{beyond.size} of {got.size} scores beyond the bound, e.g. #{beyond[0]}: "
                              f"{got[beyond[0]]!r} vs {expected[beyond[0]]!r}")


def assert_probabilities_within_bound(probabilities, logits, bound: float | None = None) -> None:
    """Probabilities (sigmoid of logits) computed another way than ``logits``: the logits' bound carried through
    the sigmoid, whose slope is at most 1/4."""
    import numpy as np

    bound = _bound(bound)
    logits = np.asarray(logits, dtype=np.float64)
    expected = 1 / (1 + np.exp(-logits))
    allowed = 0.25 * bound * np.maximum(1.0, np.abs(logits)) + 1e-15
    difference = np.abs(np.asarray(probabilities, dtype=np.float64) - expected)
    assert (difference <= allowed).all(), f"probabilities beyond the bound: {difference.max()!r}"


def near_ties(run: Mapping[str, Sequence[Hit]], bound: float | None = None) -> int:
    """Neighbours (in each query's order) closer than twice the reproducibility bound: the pairs whose order
    two computations of the same scores may swap. A test that compares orders or measures exactly across two
    paths asserts there are none (it uses a model whose scores are spread), so its exactness is the promise's."""
    return sum(nearly_tied(a.score, b.score, bound) for hits in run.values() for a, b in zip(hits, hits[1:]))


def measure_sensitive_near_ties(run: Mapping[str, Sequence[Hit]], qrels: Mapping[str, Mapping[str, int]],
                                k: int = 10, bound: float | None = None) -> list[str]:
    """The queries whose measures at depth ``k`` two computations within the reproducibility bound could
    give differently: those with two neighbours in the top ``k`` + 1 of different relevance grades closer
    than twice the bound (a swap of equal grades changes no measure). A test that compares measures exactly
    across two paths asserts there are none."""
    sensitive = []
    for query_id, hits in run.items():
        grades = qrels.get(query_id, {})
        top = list(hits)[:k + 1]
        if any(grades.get(a.doc_id, 0) != grades.get(b.doc_id, 0) and nearly_tied(a.score, b.score, bound)
               for a, b in zip(top, top[1:])):
            sensitive.append(query_id)
    return sensitive


def assert_same_measures_but_near_ties(run_a: Mapping[str, Sequence[Hit]], run_b: Mapping[str, Sequence[Hit]],
                                       qrels: Mapping[str, Mapping[str, int]], measures: Sequence[str],
                                       k: int = 10) -> list[str]:
    """Two runs of the same scores computed two ways give every query the same ``measures``, except the queries
    :func:`measure_sensitive_near_ties` names (depth ``k``: as deep as the measures read the reranked order),
    where the promise lets near-tied documents of different grades swap. Returns those queries."""
    from pipelines.evaluation import per_query_scores

    sensitive = set(measure_sensitive_near_ties(run_a, qrels, k))
    a, b = per_query_scores(run_a, qrels, measures), per_query_scores(run_b, qrels, measures)
    for measure in measures:
        differ = [q for q in a[measure] if q not in sensitive and abs(a[measure][q] - b[measure][q]) > 1e-12]
        assert not differ, f"{measure} differs on {len(differ)} queries without near-ties, e.g. {differ[0]}"
    return sorted(sensitive)
