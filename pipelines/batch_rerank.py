"""Reranking a large first-stage run file (e.g. MS MARCO dev: 6,980 queries × 1,000 candidates) as a
resumable batch job.

Queries are taken in the run's order, a chunk at a time; each chunk's pairs go to the cross-encoder in
one call (which sorts them by length and cuts token-budget batches), and its reranked lines are appended
to the output run and made durable (flush + fsync) before the progress file records how far the output
is good. Killed at any point and run again with the same arguments, the job truncates the output to the
last recorded point and goes on from the next query: nothing done is scored again, nothing is written
twice, and the result equals an uninterrupted run's (the same chunks make the same batches).

With several devices (``devices=["cuda:0", "cuda:1", …]``), one process per device reranks every n-th
query into its own part file, resumable the same way, and the parts are merged in the run's order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from tqdm.auto import tqdm

from esrerank_errors import DataError, RerankAborted
from retrieval.records import Query

from .retrieve_rerank import RerankConfig, rerank_run
from .runs import Run, check_doc_ids, trec_lines

logger = logging.getLogger(__name__)

PROGRESS_SUFFIX = ".progress.jsonl"


@dataclass
class BatchRerankResult:
    """queries: reranked by this call; resumed_after: queries found done; pairs: pairs scored by this call."""

    out: str
    queries: int
    resumed_after: int
    pairs: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


def _progress_path(out: Path) -> Path:
    return out.with_name(out.name + PROGRESS_SUFFIX)


def _read_progress(out: Path, fingerprint: dict) -> tuple[int, int, bool]:
    """(queries done, byte offset where the output is good, complete) from an earlier call."""
    progress = _progress_path(out)
    if not progress.is_file():
        if out.exists() and out.stat().st_size:
            raise DataError(out, f"exists and has no {progress.name} beside it: it was not written by this "
                                 "job; delete it or choose another output")
        return 0, 0, False
    lines = [line for line in progress.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: the records around it stand
    if not records or records[0].get("fingerprint") != fingerprint:
        raise DataError(out, "was written by a run with other inputs (candidates, model, depth or query "
                             "order); delete it and its progress file, or choose another output")
    if len(records) != len(lines):  # rewrite without the cut line, so what is appended next stands alone
        temporary = progress.with_name(progress.name + ".tmp")
        temporary.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
        temporary.replace(progress)
    last = records[-1]
    return int(last.get("done", 0)), int(last.get("offset", 0)), bool(last.get("complete"))


def _append(handle, record: dict) -> None:
    handle.write(json.dumps(record) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


def rerank_run_file(queries: Sequence[Query], candidates: Run, texts: Mapping[str, str], reranker, out,
                    rerank_k: int | None = None, queries_per_chunk: int = RerankConfig.queries_per_batch,
                    tag: str = "esrerank", fingerprint: dict | None = None,
                    show_progress: bool = True) -> BatchRerankResult:
    """Rerank ``candidates`` (query id → hits) for ``queries``, appending to the TREC run ``out``; resumes.

    Args:
        queries: the queries to rerank, in output order (each must have candidates and text).
        candidates: the first-stage run, e.g. ``read_trec_run("run.trec")``.
        texts: doc id → text the reranker reads.
        reranker: anything with ``predict(pairs)``, e.g. ``rerank.CrossEncoder``.
        out: the output run file; ``out.progress.jsonl`` beside it records how far it is good.
        rerank_k: candidates reranked per query; the rest follow in first-stage order. Default None: all.
        queries_per_chunk: queries scored in one reranker call and made durable together. Default 32
            (32,000 pairs at depth 1,000: full batches, and at most one chunk redone after a kill).
        fingerprint: what identifies the inputs (written in the progress file; a resume with other
            inputs is refused). Default: the query ids, the depth and the reranker's repr.

    Returns:
        A :class:`BatchRerankResult`.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    depth = max((len(candidates.get(q.query_id, [])) for q in queries), default=0)
    rerank_k = depth if rerank_k is None else rerank_k
    fingerprint = fingerprint or {"queries": len(queries), "first": queries[0].query_id if queries else None,
                                  "last": queries[-1].query_id if queries else None, "rerank_k": rerank_k,
                                  "reranker": repr(reranker)}
    check_doc_ids({q.query_id: candidates.get(q.query_id, []) for q in queries}, texts)
    done, offset, complete = _read_progress(out, fingerprint)
    resumed_after, started = done, time.perf_counter()
    if complete:
        logger.info("%s is complete (%d queries); nothing to do", out, done)
        return BatchRerankResult(str(out), 0, done, 0, 0.0)
    config = RerankConfig(rerank_k=rerank_k, queries_per_batch=queries_per_chunk)
    with open(out, "a+b") as run_file, open(_progress_path(out), "a", encoding="utf-8") as progress:
        run_file.truncate(offset)  # drop what a kill left after the last recorded point
        run_file.seek(offset)
        # "at" (Unix time) on every record: how fast each chunk went, across kills and resumes
        if done == 0 and offset == 0:
            progress.truncate(0)
            _append(progress, {"fingerprint": fingerprint, "done": 0, "offset": 0, "at": round(time.time(), 3)})
        else:
            logger.info("resuming %s after %d of %d queries", out, done, len(queries))
            _append(progress, {"done": done, "offset": offset, "resumed": True, "at": round(time.time(), 3)})
        pairs = 0
        bar = tqdm(total=len(queries), initial=done, desc="reranking", unit="query", disable=not show_progress)
        for start in range(done, len(queries), queries_per_chunk):
            chunk = list(queries[start:start + queries_per_chunk])
            reranked = rerank_run(chunk, candidates, reranker, texts, config, show_progress=False)
            pairs += sum(min(len(candidates.get(q.query_id, [])), rerank_k) for q in chunk)
            run_file.write("".join(trec_lines(q.query_id, reranked[q.query_id], tag) for q in chunk).encode("utf-8"))
            run_file.flush()
            os.fsync(run_file.fileno())
            done = start + len(chunk)
            _append(progress, {"done": done, "offset": run_file.tell(), "at": round(time.time(), 3)})
            bar.update(len(chunk))
        bar.close()
        _append(progress, {"done": done, "offset": run_file.tell(), "complete": True, "at": round(time.time(), 3)})
    return BatchRerankResult(str(out), len(queries) - resumed_after, resumed_after, pairs,
                             time.perf_counter() - started)


def _rerank_part(arguments: dict) -> None:
    """One device's share, in its own process: load the model there and rerank every n-th query."""
    from rerank.cross_encoder import CrossEncoder

    reranker = CrossEncoder(arguments.pop("model"), device=arguments.pop("device"), show_progress=False,
                            **arguments.pop("model_options"))
    rerank_run_file(reranker=reranker, **arguments)


def rerank_run_file_on_devices(queries: Sequence[Query], candidates: Run, texts: Mapping[str, str], model: str,
                               devices: Sequence[str], out, model_options: dict | None = None,
                               **options) -> BatchRerankResult:
    """:func:`rerank_run_file` data-parallel: one process per device (e.g. every GPU of a machine) reranks
    every ``len(devices)``-th query into ``out.part-<i>`` (each resumable), then the parts are merged into
    ``out`` in the queries' order. ``model_options`` go to ``CrossEncoder`` (max length, dtype, …)."""
    import multiprocessing

    out = Path(out)
    started = time.perf_counter()
    parts = [out.with_name(f"{out.name}.part-{i}") for i in range(len(devices))]
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    workers = []
    for i, device in enumerate(devices):
        share = list(queries[i::len(devices)])
        arguments = {"queries": share, "candidates": {q.query_id: candidates[q.query_id] for q in share},
                     "texts": texts, "out": parts[i], "model": model, "device": device,
                     "model_options": dict(model_options or {}), "show_progress": i == 0, **options}
        worker = context.Process(target=_rerank_part, args=(arguments,), name=f"rerank-{device}")
        worker.start()
        workers.append(worker)
    for worker in workers:
        worker.join()
    failed = [worker.name for worker in workers if worker.exitcode != 0]
    if failed:
        raise RerankAborted(f"{', '.join(failed)} stopped before the end; run the same command again to resume")
    by_query: dict[str, list[str]] = {}
    for part in parts:
        for line in part.read_text(encoding="utf-8").splitlines(keepends=True):
            by_query.setdefault(line.split(" ", 1)[0], []).append(line)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text("".join("".join(by_query.get(q.query_id, [])) for q in queries), encoding="utf-8")
    temporary.replace(out)
    rerank_k = options.get("rerank_k")
    pairs = sum(min(len(candidates.get(q.query_id, [])), rerank_k if rerank_k is not None else 1 << 62)
                for q in queries)
    return BatchRerankResult(str(out), len(queries), 0, pairs, time.perf_counter() - started)
