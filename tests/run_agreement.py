"""How far two runs agree: top-k identity per query, allowing for exact ties, and score differences.
A test helper (the engine parity tests decide by it); its own test is test_run_agreement.py."""

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
