"""Plain records that cross module lines: documents, queries, hits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Document:
    """One corpus entry; title and text are indexed together as one field."""

    doc_id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """The field the first stage indexes and the reranker reads: title and text joined."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True)
class Query:
    query_id: str
    text: str


class Hit(NamedTuple):
    """One ranked result. ``rank`` starts at 1, as in TREC run files. A named tuple: retrieval creates
    hundreds of thousands of these a second."""

    doc_id: str
    score: float
    rank: int
