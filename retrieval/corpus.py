"""Readers for test collections: BEIR folders, MS MARCO TSV files and HF ``datasets`` ids.

Every reader streams (the 8.8M-passage MS MARCO corpus never has to fit in memory) and reports bad input
as a :class:`DataError` naming the file, the line and the problem. With ``on_error="skip"`` a malformed
line is logged and counted instead, so a long indexing run is not stopped by one bad line.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from esrerank_errors import DataError

from .records import Document, Query

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]  # query id → doc id → graded relevance


@dataclass
class SkippedLines:
    """Malformed lines passed over with ``on_error="skip"``: (path, line, problem) each."""

    entries: list[tuple[str, int, str]] = field(default_factory=list)

    def add(self, error: DataError) -> None:
        logger.warning("skipping %s", error)
        self.entries.append((error.path, error.line or 0, error.problem))

    def __len__(self) -> int:
        return len(self.entries)


def _require_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{what} not found" if not path.exists() else f"{what} is not a file")
    return path


def _handle(error: DataError, on_error: str, skipped: SkippedLines | None) -> None:
    if on_error == "raise":
        raise error
    if skipped is not None:
        skipped.add(error)
    else:
        logger.warning("skipping %s", error)


def _iter_json_lines(path: Path, on_error: str, skipped: SkippedLines | None) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problem = f"malformed JSON: {exc.msg} (column {exc.colno})"
                _handle(DataError(path, problem, line_number), on_error, skipped)
                continue
            if not isinstance(row, dict):
                problem = f"expected a JSON object, got {type(row).__name__}"
                _handle(DataError(path, problem, line_number), on_error, skipped)
                continue
            yield line_number, row


def _string_field(row: dict, key: str, path: Path, line: int, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise DataError(path, f"missing field {key!r}", line)
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # numeric ids are common in BEIR exports
    if not isinstance(value, str):
        raise DataError(path, f"field {key!r} must be a string, got {type(value).__name__}", line)
    return value


def iter_beir_corpus(path, on_error: str = "raise", skipped: SkippedLines | None = None) -> Iterator[Document]:
    """Stream ``corpus.jsonl`` rows ``{"_id", "title", "text"}`` as :class:`Document`."""
    path = _require_file(Path(path), "corpus file")
    for line, row in _iter_json_lines(path, on_error, skipped):
        try:
            doc_id = _string_field(row, "_id", path, line)
            if not doc_id:
                raise DataError(path, "empty '_id'", line)
            yield Document(doc_id, _string_field(row, "title", path, line, required=False),
                           _string_field(row, "text", path, line))
        except DataError as error:
            _handle(error, on_error, skipped)


def read_beir_queries(path) -> list[Query]:
    """Read ``queries.jsonl`` rows ``{"_id", "text"}``; an empty query text is an error."""
    path = _require_file(Path(path), "queries file")
    queries, seen = [], {}
    for line, row in _iter_json_lines(path, "raise", None):
        query = Query(_string_field(row, "_id", path, line), _string_field(row, "text", path, line))
        _check_query(query, path, line, seen)
        queries.append(query)
    return queries


def _check_query(query: Query, path: Path, line: int, seen: dict[str, int]) -> None:
    if not query.query_id:
        raise DataError(path, "empty query id", line)
    if not query.text.strip():
        raise DataError(path, f"query {query.query_id!r} has empty text", line)
    if query.query_id in seen:
        raise DataError(path, f"duplicate query id {query.query_id!r} (first on line {seen[query.query_id]})", line)
    seen[query.query_id] = line


def read_qrels(path) -> Qrels:
    """Read relevance judgments: BEIR TSV (``query-id corpus-id score`` with a header) or TREC
    (``qid 0 docid rel``, whitespace separated). Grades are kept as given (nDCG uses them as gains)."""
    path = _require_file(Path(path), "qrels file")
    qrels: Qrels = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if line_number == 1 and parts[0] in ("query-id", "query_id", "qid"):
                continue  # BEIR header
            if len(parts) == 3:
                query_id, doc_id, grade = parts
            elif len(parts) == 4:
                query_id, _, doc_id, grade = parts
            else:
                raise DataError(path, f"expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}", line_number)
            try:
                relevance = int(float(grade))
            except ValueError:
                raise DataError(path, f"relevance {grade!r} is not a number", line_number) from None
            qrels.setdefault(query_id, {})[doc_id] = relevance
    if not qrels:
        raise DataError(path, "no judgments in qrels file")
    return qrels


def check_qrels(qrels: Qrels, query_ids: Iterable[str], doc_ids: Iterable[str], source: str = "qrels") -> Qrels:
    """Drop judgments for unknown queries (they cannot be run) and warn, with counts, about them and
    about judged documents missing from the corpus (kept: they count against recall, as in the official
    evaluation)."""
    query_ids, doc_ids = set(query_ids), set(doc_ids)
    unknown_queries = sorted(q for q in qrels if q not in query_ids)
    unknown_docs = {d for judged in qrels.values() for d in judged if d not in doc_ids}
    if unknown_queries:
        logger.warning("%s: %d judged query ids are not in the queries file and are dropped (e.g. %s)",
                       source, len(unknown_queries), ", ".join(unknown_queries[:3]))
    if unknown_docs:
        logger.warning("%s: %d judged doc ids are not in the corpus (e.g. %s); they stay as unretrievable",
                       source, len(unknown_docs), ", ".join(sorted(unknown_docs)[:3]))
    return {q: judged for q, judged in qrels.items() if q in query_ids}


@dataclass
class Collection:
    """A test collection in memory: documents, the judged queries of one split, their qrels."""

    name: str
    documents: list[Document]
    queries: list[Query]
    qrels: Qrels

    def texts(self) -> dict[str, str]:
        """doc id → the text the first stage indexes and the reranker reads (title and text joined)."""
        return {d.doc_id: d.contents for d in self.documents}


def check_documents(documents: list[Document], path) -> set[str]:
    """The doc ids of a corpus read from ``path``, refused when there are none or one is there twice (the
    error names both lines)."""
    if not documents:
        raise DataError(path, "the corpus has no documents")
    doc_ids = {d.doc_id for d in documents}
    if len(doc_ids) < len(documents):
        seen: dict[str, int] = {}
        for line, row in _iter_json_lines(Path(path), "skip", SkippedLines()):
            doc_id = str(row.get("_id"))
            if doc_id in seen:
                raise DataError(path, f"duplicate doc id {doc_id!r} (first on line {seen[doc_id]})", line)
            seen[doc_id] = line
        raise DataError(path, f"{len(documents) - len(doc_ids)} doc ids are there twice")
    return doc_ids


def load_beir(folder, split: str = "test") -> Collection:
    """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``). Only queries
    with judgments in the split are kept, as BEIR's evaluation does."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "data folder not found" if not folder.exists() else "not a folder")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise DataError(qrels_path, f"qrels for split {split!r} not found (splits here: {splits or 'none'})")
    documents = list(iter_beir_corpus(folder / "corpus.jsonl"))
    doc_ids = check_documents(documents, folder / "corpus.jsonl")
    queries = read_beir_queries(folder / "queries.jsonl")
    qrels = check_qrels(read_qrels(qrels_path), (q.query_id for q in queries), doc_ids, source=str(qrels_path))
    judged = [q for q in queries if q.query_id in qrels]
    return Collection(folder.name, documents, judged, qrels)


# --- MS MARCO -------------------------------------------------------------------------------------

def _iter_tsv_pairs(path: Path, what: str, on_error: str,
                    skipped: SkippedLines | None) -> Iterator[tuple[int, str, str]]:
    csv.field_size_limit(1 << 24)
    with open(path, encoding="utf-8", newline="") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) != 2 or not parts[0]:
                problem = f"expected 2 tab-separated columns (id, {what}), got {len(parts)}"
                _handle(DataError(path, problem, line_number), on_error, skipped)
                continue
            yield line_number, parts[0], parts[1]


def iter_msmarco_collection(path, on_error: str = "raise", skipped: SkippedLines | None = None) -> Iterator[Document]:
    """Stream MS MARCO's ``collection.tsv`` (``pid<TAB>passage``); passages have no title."""
    path = _require_file(Path(path), "collection file")
    for _, pid, passage in _iter_tsv_pairs(path, "passage", on_error, skipped):
        yield Document(pid, "", passage)


def read_msmarco_queries(path) -> list[Query]:
    """Read an MS MARCO ``queries.*.tsv`` file (``qid<TAB>text``)."""
    path = _require_file(Path(path), "queries file")
    queries, seen = [], {}
    for line, qid, text in _iter_tsv_pairs(path, "query text", "raise", None):
        query = Query(qid, text)
        _check_query(query, path, line, seen)
        queries.append(query)
    return queries


# --- HF datasets ------------------------------------------------------------------------------------

def load_hf_beir(dataset_id: str, split: str = "test") -> Collection:
    """Load a BEIR collection from the HF hub, e.g. ``BeIR/scifact`` (qrels from ``BeIR/scifact-qrels``).
    Needs network access; offline users pass a local folder instead."""
    import datasets  # imported here: it is slow to import and only this path needs it

    try:
        corpus = datasets.load_dataset(dataset_id, "corpus", split="corpus")
        queries = datasets.load_dataset(dataset_id, "queries", split="queries")
        qrels_rows = datasets.load_dataset(f"{dataset_id}-qrels", split=split)
    except Exception as exc:  # the hub raises many types; all mean "could not get it"
        raise DataError(dataset_id, f"could not load BEIR dataset from the HF hub ({type(exc).__name__}: {exc}); "
                                    "pass a local BEIR folder instead") from None
    documents = [Document(str(r["_id"]), r.get("title") or "", r["text"]) for r in corpus]
    qrels: Qrels = {}
    for row in qrels_rows:
        qrels.setdefault(str(row["query-id"]), {})[str(row["corpus-id"])] = int(row["score"])
    query_list = [Query(str(r["_id"]), r["text"]) for r in queries if str(r["_id"]) in qrels]
    qrels = check_qrels(qrels, (q.query_id for q in query_list), (d.doc_id for d in documents), source=dataset_id)
    return Collection(dataset_id.split("/")[-1], documents, query_list, qrels)


def iter_hf_msmarco_passages(dataset_id: str = "Tevatron/msmarco-passage-corpus") -> Iterator[Document]:
    """Stream the MS MARCO passage corpus from the HF hub (``docid``, ``title``, ``text`` columns)."""
    import datasets

    for row in datasets.load_dataset(dataset_id, split="train", streaming=True):
        yield Document(str(row["docid"]), row.get("title") or "", row["text"])


def load_collection(source, split: str = "test", data_dir=None) -> Collection:
    """A collection by folder, name or id; see :mod:`retrieval.collections`."""
    from .collections import load_collection as resolve

    return resolve(source, split, data_dir)


@dataclass
class CorpusSource:
    """A corpus to stream into an engine: the documents (read lazily, malformed lines skipped into
    ``skipped``), how many lines it has (for progress), and an id that changes when the file does (so a
    resumed load knows it is the same corpus)."""

    documents: Iterator[Document]
    total: int
    corpus_id: str
    skipped: SkippedLines


def open_corpus(data: str) -> CorpusSource:
    """A BEIR folder, a ``corpus.jsonl``, an MS MARCO ``collection.tsv``, or ``msmarco-passage`` (the HF
    datasets copy, streamed; needs network), as ``esrerank index`` reads them."""
    skipped = SkippedLines()
    if data == "msmarco-passage":
        return CorpusSource(iter_hf_msmarco_passages(), 8_841_823, "hf:Tevatron/msmarco-passage-corpus", skipped)
    source = Path(data)
    path = source / "corpus.jsonl" if source.is_dir() else source
    if not path.is_file():
        raise DataError(path, "corpus not found (give a BEIR folder, a collection.tsv or 'msmarco-passage')")
    reader = iter_msmarco_collection if path.suffix == ".tsv" else iter_beir_corpus
    with open(path, "rb") as handle:
        total = sum(1 for line in handle if line.strip())
    stat = path.stat()
    return CorpusSource(reader(path, on_error="skip", skipped=skipped), total,
                        f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}", skipped)
