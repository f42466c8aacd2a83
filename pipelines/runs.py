"""TREC run files: ``qid Q0 docid rank score tag``, ranks from 1, each score written with the digits that read
back as the same float (Python's ``repr``), so a saved run scores exactly the measures computed from it in
memory: rounded scores (``%.6f``) turn close scores into ties, which ir-measures and trec_eval break by doc id,
not by the order esrerank ranked them in."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from esrerank_errors import DataError
from retrieval.records import Hit

Run = dict[str, list[Hit]]  # query id → hits, best first


def write_trec_run(run: Mapping[str, Sequence[Hit]], path, tag: str = "esrerank") -> None:
    """Write ``run`` to ``path`` in TREC format (``qid Q0 docid rank score tag``, scores exact: the shortest
    digits that read back as the same float); queries in the order given, hits re-ranked from 1 in score order.

    Example::

        write_trec_run(pipeline.run(collection.queries), "runs/reranked.trec", tag="reranked")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for query_id, hits in run.items():
            handle.write(trec_lines(query_id, hits, tag))


def trec_lines(query_id: str, hits: Sequence[Hit], tag: str = "esrerank") -> str:
    """One query's hits as TREC run lines, ranks from 1 in the order given, scores exact (``repr``)."""
    return "".join(f"{query_id} Q0 {hit.doc_id} {rank} {float(hit.score)!r} {tag}\n"
                   for rank, hit in enumerate(hits, 1))


def check_doc_ids(run: Mapping[str, Sequence[Hit]], texts: Mapping[str, str], source="candidates") -> None:
    """Refuse a run naming documents ``texts`` lacks (a run file of another corpus, or a truncated corpus)."""
    unknown = {hit.doc_id for hits in run.values() for hit in hits if hit.doc_id not in texts}
    if unknown:
        raise DataError(source, f"{len(unknown)} candidate doc ids are not in the corpus (e.g. {sorted(unknown)[0]!r})")


def read_trec_run(path, k: int | None = None) -> Run:
    """Read a TREC run; each query's hits are sorted by score (ties by rank) and cut to ``k``.

    Returns:
        ``{query_id: [Hit(doc_id, score, rank), ...]}``, ranks from 1. A malformed line raises
        ``DataError`` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "run file not found")
    rows: dict[str, list[tuple[float, int, str]]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(path, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}",
                                line_number)
            query_id, _, doc_id, rank, score, _ = parts
            try:
                rows.setdefault(query_id, []).append((float(score), int(rank), doc_id))
            except ValueError:
                raise DataError(path, f"rank {rank!r} or score {score!r} is not a number", line_number) from None
    if not rows:
        raise DataError(path, "run file is empty")
    run: Run = {}
    for query_id, entries in rows.items():
        entries.sort(key=lambda e: (-e[0], e[1]))
        run[query_id] = [Hit(doc_id, score, rank) for rank, (score, _, doc_id) in enumerate(entries[:k], start=1)]
    return run
