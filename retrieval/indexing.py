"""Bulk-loading a corpus into Elasticsearch/OpenSearch: streaming, parallel, resumable, nothing lost.

- The corpus is streamed: at most ``workers × 2`` batches are in memory at once, whatever its size.
- Each load goes into a new physical index ``<alias>-<timestamp>`` with zero replicas and no refreshes;
  when it is complete the replicas and refresh interval are restored, segments are merged, and the
  alias is switched to it in one atomic request, so searchers never see a partial index.
- Document ``_id`` is the corpus id, so sending a document twice overwrites it: re-running after an
  interruption cannot duplicate anything. The index's ``_meta`` records how many documents (in corpus
  order) are acknowledged; a re-run with the same corpus and settings resumes after them.
- Per document, as ``elasticsearch-py``'s bulk helpers report it: rejections (429) and server errors
  (5xx) are retried with capped exponential backoff; other failures go to the dead-letter file with the
  document and the reason. A server that does not answer is retried the same way; when retries run out
  the load stops with a message saying that re-running the same command resumes it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from esrerank_errors import EngineError, EnginePermissionError, EngineUnavailable, IndexingAborted

from .analysis import get_analyzer
from .engine_admin import FIELD, IndexConfig
from .engine_rest import error_reason, ndjson, permission_error
from .engines import SearchEngineBM25
from .records import Document

logger = logging.getLogger(__name__)

FORMAT = 1


@dataclass
class Backoff:
    """Capped exponential backoff: ``initial_s``, doubling, at most ``max_s``, ``max_retries`` times."""

    max_retries: int = 8
    initial_s: float = 1.0
    max_s: float = 30.0

    def delays(self) -> Iterator[float]:
        for attempt in range(self.max_retries):
            yield min(self.max_s, self.initial_s * 2 ** attempt)


@dataclass
class IndexingResult:
    alias: str
    index: str
    indexed: int = 0
    failed: int = 0
    resumed_after: int = 0
    retried_documents: int = 0
    seconds: float = 0.0
    dead_letter: str | None = None
    count_in_index: int = 0
    settings: dict = field(default_factory=dict)

    @property
    def docs_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds else 0.0


class DeadLetters:
    """Append-only JSON-lines file of what could not be indexed, with the reason."""

    def __init__(self, path: Path | None):
        self.path = path
        self.count = 0
        self._lock = threading.Lock()

    def write(self, row: dict) -> None:
        with self._lock:
            self.count += 1
            if self.path is None:
                logger.warning("not indexed: %s", row)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _source(document: Document, settings: IndexConfig) -> dict:
    contents = document.contents
    if settings.analysis == "client":
        contents = " ".join(get_analyzer(settings.analyzer)(contents))
    return {FIELD: contents, "title": document.title, "text": document.text}


def send_bulk(engine: SearchEngineBM25, index: str, documents: list[Document], settings: IndexConfig,
              backoff: Backoff, dead_letters: DeadLetters) -> tuple[int, int, int]:
    """Index one batch; returns (indexed, failed, retried). Raises IndexingAborted when retries of the
    whole request, or of documents refused with 429/5xx, run out."""
    pending, failed, retried = [], 0, 0
    for doc in documents:  # the server would reject the whole request for one such id
        if len(doc.doc_id.encode("utf-8")) > 512:
            failed += 1
            dead_letters.write({"doc_id": doc.doc_id, "status": 400, "reason": "_id is longer than 512 bytes",
                                "document": {"title": doc.title, "text": doc.text}})
        else:
            pending.append(doc)
    delays = backoff.delays()
    while pending:
        body = ndjson(line for doc in pending for line in
                      ({"index": {"_index": index, "_id": doc.doc_id}}, _source(doc, settings)))
        try:
            response = engine.bulk(body)
        except EngineError as exc:  # the whole request failed
            if not (isinstance(exc, EngineUnavailable) or exc.status == 429 or exc.status >= 500):
                raise
            delay = next(delays, None)
            if delay is None:
                raise IndexingAborted(f"bulk request failed after {backoff.max_retries} retries: {exc}") from None
            logger.warning("bulk request failed (%s); retrying %d documents in %.0f s", exc, len(pending), delay)
            time.sleep(delay)
            continue
        retry, transient = [], ""
        for doc, item in zip(pending, response["items"]):
            result = item["index"]
            status = result.get("status", 500)
            if status < 300:
                continue
            if status == 403 and error_reason(result).startswith("security_exception"):
                # a privilege missing: every document would fail alike (a 403 write block stays per document)
                raise permission_error(engine.engine, engine.url, error_reason(result), f"/{index}/_bulk")
            if status == 429 or status >= 500:
                retry.append(doc)
                transient = transient or f"HTTP {status}: {error_reason(result)}"
            else:
                failed += 1
                dead_letters.write({"doc_id": doc.doc_id, "status": status, "reason": error_reason(result),
                                    "document": {"title": doc.title, "text": doc.text}})
        if retry:
            delay = next(delays, None)
            if delay is None:
                # Still busy or unavailable (a node gone, its shards not back): the documents are not
                # bad, so they are not dead letters; the load stops where it is acknowledged, to resume.
                raise IndexingAborted(f"{len(retry)} documents still refused after {backoff.max_retries} retries "
                                      f"({transient})")
            retried += len(retry)
            logger.info("%d documents refused (%s); retrying in %.0f s", len(retry), transient, delay)
            time.sleep(delay)
        pending = retry
    return len(documents) - failed, failed, retried


def _batches(documents: Iterator[Document], size: int) -> Iterator[list[Document]]:
    while True:
        batch = list(islice(documents, size))
        if not batch:
            return
        yield batch


def find_resumable(engine: SearchEngineBM25, alias: str, meta: dict) -> str | None:
    """An unfinished physical index of this alias built with the same corpus and settings."""
    for name in reversed(engine.list_indices(f"{alias}-*")):
        existing = engine.index_meta(name)
        if not existing.get("complete") and all(existing.get(k) == v for k, v in meta.items()
                                                 if k not in ("acked_docs", "complete", "created")
                                                 and not (k == "analysis" and v == "auto")):
            return name
    return None


def build_index(engine: SearchEngineBM25, documents: Iterable[Document], alias: str, corpus_id: str,
                settings: IndexConfig | None = None, batch_docs: int = 1000, workers: int = 2,
                dead_letter: str | os.PathLike | None = None, backoff: Backoff | None = None,
                total: int | None = None, force_merge: bool = True, keep_old: bool = False,
                checkpoint_every_s: float = 1.0, show_progress: bool = True) -> IndexingResult:
    """Load ``documents`` into a new index behind ``alias`` (resuming an unfinished one), then swap it in.

    Args:
        engine: a connected :class:`SearchEngineBM25` (its ``index`` is not used here).
        documents: the corpus, streamed in a fixed order (a resume skips the acknowledged prefix).
        alias: the name searchers use.
        corpus_id: identifies the corpus (path and size, or a dataset id): a resume needs the same.
        settings: BM25 k1/b, analyzer, analysis mode, shards, replicas. Default ``IndexConfig()``.
        batch_docs: documents per ``_bulk`` request. Default 1000 (≈0.5 MB of MS MARCO passages).
        workers: concurrent bulk requests. Default 2, one per core of a small server.
        dead_letter: JSON-lines file for documents (and malformed lines) that could not be indexed.
        backoff: retry policy for 429/5xx and unreachable servers. Default ``Backoff()``: 8 retries,
            1 s doubling to at most 30 s.
        force_merge: merge to one segment at the end (drops documents overwritten by a resume, which
            would otherwise still count in BM25 statistics, and speeds up search). Default True.
        keep_old: keep the index the alias pointed to before. Default False (deleted after the swap).

    Returns:
        An :class:`IndexingResult`: documents indexed and failed, where a resume started, the index
        behind the alias, the count in it, and the time taken.

    Example::

        from retrieval.corpus import open_corpus
        from retrieval.engines import OpenSearchBM25
        from retrieval.indexing import build_index

        corpus = open_corpus("../shared/data/scifact-train")
        engine = OpenSearchBM25("http://127.0.0.1:9201", "scifact")
        report = build_index(engine, corpus.documents, "scifact", corpus.corpus_id, total=corpus.total)
    """
    try:
        return _build_index(engine, documents, alias, corpus_id, settings, batch_docs, workers, dead_letter, backoff,
                            total, force_merge, keep_old, show_progress, checkpoint_every_s)
    except EnginePermissionError as exc:
        raise EnginePermissionError(exc.privilege, exc.index, f"{exc.message}; indexing needs "
                                    f"{INDEX_PRIVILEGES[engine.engine]}") from None


# What indexing asks of the engine, on the alias and the versioned indices behind it (ALIAS and ALIAS-*);
# CI indexes with users that hold exactly these (tests/pipelines/test_secured_clusters.py).
INDEX_PRIVILEGES = {
    "elasticsearch": "cluster privilege monitor, and index privileges manage, write, read on ALIAS*",
    "opensearch": "cluster permissions cluster_composite_ops, cluster_monitor, and index permissions crud, "
                  "create_index, manage on ALIAS*",
}


def _build_index(engine, documents, alias, corpus_id, settings, batch_docs, workers, dead_letter, backoff, total,
                 force_merge, keep_old, show_progress, checkpoint_every_s) -> "IndexingResult":
    settings = settings or IndexConfig()
    backoff = backoff or Backoff()
    started = time.perf_counter()
    if engine.exists(alias) and not engine.alias_targets(alias):
        raise EngineError(400, f"{alias!r} is an index, not an alias; esrerank manages {alias!r} as an alias "
                               "over versioned indices: delete it or choose another name")
    settings = engine.resolve_analysis(settings)
    meta = {"format": FORMAT, "corpus": corpus_id, "k1": settings.k1, "b": settings.b, "analyzer": settings.analyzer,
            "analysis": settings.analysis, "shards": settings.shards, "complete": False, "acked_docs": 0}
    index = find_resumable(engine, alias, meta)
    resumed_after = 0
    if index is not None:
        resumed_after = int(engine.index_meta(index).get("acked_docs", 0))
        logger.info("resuming unfinished index %s after %d acknowledged documents", index, resumed_after)
    else:
        index = f"{alias}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() // 1_000_000 % 1000:03d}"
        meta["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        settings = engine.create_index(index, settings, meta)
        logger.info("created index %s (%s analysis, %s analyzer, k1=%s, b=%s)", index, settings.analysis,
                    settings.analyzer, settings.k1, settings.b)
    meta = engine.index_meta(index)
    if settings.analysis == "auto":  # resumed: the index says how it analyzes
        settings = IndexConfig(**{**asdict(settings), "analysis": meta["analysis"]})
    report = IndexingResult(alias=alias, index=index, resumed_after=resumed_after, settings=asdict(settings),
                            dead_letter=str(dead_letter) if dead_letter else None)
    dead_letters = DeadLetters(Path(dead_letter) if dead_letter else None)

    stream = iter(documents)
    for _ in islice(stream, resumed_after):
        pass
    progress = tqdm(total=total, initial=resumed_after, desc=f"indexing {alias}", unit="doc",
                    disable=not show_progress, smoothing=0.05)
    # Batches finish out of order; the checkpoint is the longest prefix of finished batches.
    in_flight: dict[Future, int] = {}
    finished: dict[int, int] = {}
    next_to_ack, acked_docs, last_checkpoint = 0, resumed_after, time.monotonic()

    def checkpoint(force: bool = False) -> None:
        nonlocal acked_docs, next_to_ack, last_checkpoint
        while next_to_ack in finished:
            acked_docs += finished.pop(next_to_ack)
            next_to_ack += 1
        if force or time.monotonic() - last_checkpoint >= checkpoint_every_s:
            meta["acked_docs"] = acked_docs
            engine.put_meta(index, meta)
            last_checkpoint = time.monotonic()

    def collect(done: Iterable[Future]) -> None:
        for future in done:
            sequence = in_flight.pop(future)
            indexed, failed, retried = future.result()  # re-raises IndexingAborted
            report.indexed += indexed
            report.failed += failed
            report.retried_documents += retried
            finished[sequence] = indexed + failed
            progress.update(indexed + failed)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                for sequence, batch in enumerate(_batches(stream, batch_docs)):
                    while len(in_flight) >= workers * 2:
                        done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                        collect(done)
                        checkpoint()
                    in_flight[pool.submit(send_bulk, engine, index, batch, settings, backoff, dead_letters)] = sequence
                collect(list(in_flight))
            except BaseException:
                # Let the batches already sent finish, so the checkpoint covers all that was acknowledged.
                for future in list(in_flight):
                    try:
                        collect([future])
                    except Exception:  # already failing; the first error is the one reported
                        in_flight.pop(future, None)
                raise
            finally:
                try:
                    checkpoint(force=True)
                except EngineError as exc:
                    logger.warning("could not record the checkpoint (%s); a re-run resends more documents", exc)
    except EnginePermissionError:
        raise  # a privilege missing: a re-run would fail the same way
    except (IndexingAborted, EngineError) as exc:
        # An engine error can also come from recording a checkpoint (the server died between two bulk
        # requests); what was acknowledged is recorded either way, so a re-run resumes.
        raise IndexingAborted(f"{exc}. {acked_docs} documents are acknowledged in {index}; "
                              "re-run the same command to resume") from None
    finally:
        progress.close()

    _finish(engine, index, alias, settings, force_merge, keep_old, meta)
    report.count_in_index = engine.count(index)
    report.seconds = time.perf_counter() - started
    logger.info("indexed %d documents into %s (alias %s) in %.1f s, %d failed", report.indexed, index, alias,
                report.seconds, report.failed)
    return report


def _finish(engine: SearchEngineBM25, index: str, alias: str, settings: IndexConfig, force_merge: bool,
            keep_old: bool, meta: dict) -> None:
    engine.open_for_search(index, settings.replicas, force_merge)
    meta["complete"] = True
    engine.put_meta(index, meta)
    old = engine.point_alias(alias, index)
    logger.info("alias %s now points to %s", alias, index)
    if not keep_old:
        for name in old:
            engine.delete_index(name)
            logger.info("deleted previous index %s", name)
