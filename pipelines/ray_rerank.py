"""Reranking on a Ray cluster, when one machine is not enough: the queries go to scoring actors in chunks, an
actor per device (a GPU, or ``cpus_per_actor`` CPU slots on a CPU-only node) loads the model once and scores
the chunks it is given, and the results come back in the queries' order.

- :func:`rerank_run_file_on_ray`: ``esrerank rerank --ray``, a run file reranked as a resumable job. Each
  finished chunk is written durably to its own file beside the output (``OUT.chunks/``) the moment it comes
  back, so a driver killed, or a whole cluster lost, loses only the chunks in flight: the same command again
  scores only the chunks not on disk. When every chunk is there they are joined, in the queries' order, into
  the output run. The same chunks make the same batches, so the output is the single-process job's byte for
  byte when each actor scores with as many threads as that process (``rerank --threads``) on the same CPU
  (or GPU) model, and within :data:`rerank.reproducibility.FLOAT32_SCORE_BOUND` × max(1, |score|) of it
  otherwise (:mod:`rerank.reproducibility`).
- :class:`RayReranker`: ``esrerank evaluate --ray``, a reranker with the ``score_heads`` interface that
  :func:`pipelines.retrieve_rerank.rerank_run` takes, scoring all heads on the cluster at once.

Actors are restarted by Ray when their node dies and the chunk they held is scored again there or elsewhere
(up to ``RESTARTS`` times): the job finishes with every query, none twice, as long as a node has room for the
restarted actor (leave a free slot with ``actors``, or let an autoscaling cluster add a node; otherwise the
restarted actor waits for one). Ray is an optional extra (``pip install 'esrerank[ray]'``), on every node.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from esrerank_errors import DataError, InputError, RerankAborted
from retrieval.records import Hit, Query

from .batch_rerank import BatchRerankResult
from .fusion import fused_run
from .retrieve_rerank import RerankConfig, _pair_scores
from .runs import Run, check_doc_ids, trec_lines

logger = logging.getLogger(__name__)

RAY_MISSING = "--ray needs Ray, an optional extra: pip install 'esrerank[ray]' (on the driver and every node)"
CHUNKS_SUFFIX = ".chunks"
RESTARTS = 4  # times an actor is started again (a node lost), and a chunk retried, before the job stops


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide the job runs.

    address: the cluster: ``auto`` (the one ``ray start`` joined on this machine), ``HEAD:6379``, or
        ``ray://HEAD:10001`` (Ray Client). Default None: a Ray started for this job on this machine.
    actors: scoring actors. Default None: one per GPU the cluster has, else one per ``cpus_per_actor`` CPUs.
    cpus_per_actor: CPU slots an actor takes on a CPU-only cluster, and the torch threads it scores with.
        Default 1: Ray's unit of CPU, and one thread per slot keeps actors on one machine from competing.
    gpus_per_actor: GPUs an actor takes where the cluster has GPUs. Default 1: one model per device.
    chunks_per_actor: chunks queued per actor. Default 2: the next is there when one finishes.
    """

    address: str | None = None
    actors: int | None = None
    cpus_per_actor: int = 1
    gpus_per_actor: float = 1.0
    chunks_per_actor: int = 2

    def __post_init__(self):
        if self.actors is not None and self.actors < 1:
            raise InputError(f"actors must be 1 or more, got {self.actors}")
        if self.cpus_per_actor < 1 or self.gpus_per_actor <= 0 or self.chunks_per_actor < 1:
            raise InputError("cpus_per_actor, gpus_per_actor and chunks_per_actor must be positive")


@dataclass
class RayStats:
    """What the cluster did: chunks scored, seconds the actors spent scoring, and by which actor
    (``<Ray node id>:<pid>``)."""

    chunks: int = 0
    actor_seconds: float = 0.0
    by_actor: dict = field(default_factory=dict)


def _ray():
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    return ray


class _Scorer:
    """One actor: the model, loaded once, scoring chunks of (query, head) pairs."""

    def __init__(self, model: str, model_options: dict, threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from rerank.cross_encoder import CrossEncoder

        self.reranker = CrossEncoder(model, show_progress=False, **model_options)
        import ray

        self.name = f"{ray.get_runtime_context().get_node_id()}:{os.getpid()}"  # Ray's node id, the process

    def score(self, index: int, queries: list[Query], heads: list[list[Hit]], texts: dict[str, str]):
        started = time.perf_counter()
        scores = _pair_scores(queries, heads, self.reranker, texts)
        return index, [np.asarray(s, dtype=np.float32) for s in scores], self.name, time.perf_counter() - started


class RayPool:
    """Scoring actors on a Ray cluster (see :class:`RayConfig`), each with the model loaded once.

    ``model_options`` go to ``CrossEncoder`` (max length, dtype, passages, runtime)."""

    def __init__(self, model: str, model_options: dict | None = None, config: RayConfig = RayConfig()):
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=config.address, logging_level=logging.WARNING, log_to_driver=False)
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            options, count = {"num_gpus": config.gpus_per_actor}, int(gpus / config.gpus_per_actor)
            threads = None
        else:
            options, count = {"num_cpus": config.cpus_per_actor}, int(resources.get("CPU", 1)) // config.cpus_per_actor
            threads = config.cpus_per_actor
        self.actors_count = config.actors or max(1, count)
        # a lost node's actor is started again elsewhere, and the chunk it held scored again, a few times: an
        # actor that keeps dying (out of memory on every chunk) ends the job instead of looping forever
        remote = ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS, **options)(_Scorer)
        self.actors = [remote.remote(model, dict(model_options or {}), threads) for _ in range(self.actors_count)]
        self.config = config
        self.stats = RayStats()
        logger.info("Ray: %d actors (%s each) on a cluster with %s", self.actors_count, options,
                    {k: v for k, v in resources.items() if k in ("CPU", "GPU")})

    def score(self, jobs: Sequence[tuple[int, list[Query], list[list[Hit]]]], texts: Mapping[str, str]
              ) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(chunk index, scores per query) for every (chunk index, queries, heads), as they finish. A chunk's
        texts go with it (only its own documents'), so the driver sends each text once per chunk."""
        ray = _ray()
        from ray.util import ActorPool

        def submit(actor, job):
            index, queries, heads = job
            needed = {hit.doc_id: texts[hit.doc_id] for head in heads for hit in head}
            return actor.score.remote(index, queries, heads, needed)

        pool = ActorPool(self.actors)
        pending = iter(jobs)
        in_flight = 0
        limit = self.actors_count * self.config.chunks_per_actor
        for job in pending:  # fill the queue, then one new chunk per finished one
            pool.submit(submit, job)
            in_flight += 1
            if in_flight >= limit:
                break
        while in_flight:
            try:
                index, scores, actor, seconds = pool.get_next_unordered()
            except ray.exceptions.RayError as exc:
                cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise RerankAborted(f"the Ray cluster failed a chunk ({type(exc).__name__}: {cause}); the chunks "
                                    "on disk are kept: fix the cause and run the same command again") from None
            in_flight -= 1
            self.stats.chunks += 1
            self.stats.actor_seconds += seconds
            self.stats.by_actor[actor] = self.stats.by_actor.get(actor, 0) + 1
            yield index, scores
            for job in pending:
                pool.submit(submit, job)
                in_flight += 1
                break

    def close(self) -> None:
        ray = _ray()
        for actor in self.actors:
            ray.kill(actor)


class RayReranker:
    """A reranker whose ``score_heads`` scores on a Ray cluster: what :func:`rerank_run` (and so
    ``evaluate``) takes in place of a cross-encoder. The heads are cut into chunks of ``queries_per_chunk``
    queries, as the single-process path cuts its batches: the same scores, byte for byte or within the
    bound, as :mod:`rerank.reproducibility` says.

    Args:
        pool: a :class:`RayPool`.
        texts: doc id → text the model reads, or a function fetching them (a retriever's ``fetch_texts``).
        queries_per_chunk: queries a chunk (default 32, :class:`RerankConfig`'s ``queries_per_batch``).
    """

    def __init__(self, pool: RayPool, texts: Mapping[str, str] | Callable[[list[str]], list[str]],
                 queries_per_chunk: int = RerankConfig.queries_per_batch):
        self.pool = pool
        self.texts = texts
        self.queries_per_chunk = queries_per_chunk

    def score_heads(self, queries: Sequence[Query], heads: Sequence[Sequence[Hit]]) -> list[np.ndarray]:
        size = self.queries_per_chunk
        jobs = [(start // size, list(queries[start:start + size]), [list(h) for h in heads[start:start + size]])
                for start in range(0, len(queries), size)]
        texts = self.texts
        if callable(texts):  # a retriever's fetch_texts: the engine index's own text, as without Ray
            ids = list(dict.fromkeys(hit.doc_id for head in heads for hit in head))
            texts = dict(zip(ids, texts(ids)))
        check_doc_ids({str(i): head for i, head in enumerate(heads)}, texts)
        by_chunk = dict(self.pool.score(jobs, texts))
        return [scores for index in range(len(jobs)) for scores in by_chunk[index]]

    def __repr__(self) -> str:
        return f"RayReranker({self.pool.actors_count} actors)"


# --- the resumable run-file job -----------------------------------------------------------------------------

def _durable_write(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a temporary file, synced, renamed, and the folder synced."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _chunk_state(folder: Path, out: Path, fingerprint: dict) -> tuple[set[int], bool]:
    """(chunks on disk, complete) from an earlier call; a new folder with the fingerprint otherwise."""
    stamp = folder / "fingerprint.json"
    if folder.is_dir() and not stamp.is_file() and not any(folder.iterdir()):
        folder.rmdir()  # a kill between making the folder and stamping it: start afresh
    if not folder.is_dir():
        if out.exists() and out.stat().st_size:
            raise DataError(out, f"exists and has no {folder.name}/ beside it: it was not written by this job; "
                                 "delete it or choose another output")
        folder.mkdir(parents=True)
        _durable_write(stamp, json.dumps(fingerprint, sort_keys=True) + "\n")
        return set(), False
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        recorded = None
    if recorded != json.loads(json.dumps(fingerprint)):
        raise DataError(out, f"{folder.name}/ was written by a run with other inputs (candidates, model, depth, "
                             "chunking or query order); delete it and the output, or choose another output")
    if (folder / "complete.json").is_file() and out.is_file():
        return set(), True
    done = {int(p.name.split(".")[0]) for p in folder.glob("*.trec") if p.name.split(".")[0].isdigit()}
    return done, False


def rerank_run_file_on_ray(queries: Sequence[Query], candidates: Run, texts: Mapping[str, str], model: str, out,
                           model_options: dict | None = None, rerank_k: int | None = None,
                           queries_per_chunk: int = RerankConfig.queries_per_batch, tag: str = "esrerank",
                           fingerprint: dict | None = None, ray_config: RayConfig = RayConfig(),
                           show_progress: bool = True, pool: RayPool | None = None) -> BatchRerankResult:
    """:func:`pipelines.batch_rerank.rerank_run_file` on a Ray cluster; the same arguments, the same output.

    Args:
        model: the cross-encoder (a local folder every node can read, or a hub id every node can fetch).
        model_options: for ``CrossEncoder`` on the actors (max_length, dtype, passages, runtime).
        ray_config: :class:`RayConfig` (where the cluster is, how many actors).
        pool: a :class:`RayPool` already started (its actors are kept); default None: one for this call, of
            ``model`` and ``ray_config``, stopped at the end.
        Others: as :func:`rerank_run_file`; ``OUT.chunks/`` beside the output holds the chunks scored so far.

    Returns:
        A :class:`BatchRerankResult`: ``queries`` scored by this call, ``resumed_after`` the queries whose
        chunks were on disk before it.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    depth = max((len(candidates.get(q.query_id, [])) for q in queries), default=0)
    rerank_k = depth if rerank_k is None else rerank_k
    fingerprint = {**(fingerprint or {"queries": len(queries), "first": queries[0].query_id if queries else None,
                                      "last": queries[-1].query_id if queries else None, "model": model,
                                      "model_options": model_options or {}}),
                   "rerank_k": rerank_k, "queries_per_chunk": queries_per_chunk, "tag": tag}
    check_doc_ids({q.query_id: candidates.get(q.query_id, []) for q in queries}, texts)
    folder = out.with_name(out.name + CHUNKS_SUFFIX)
    done, complete = _chunk_state(folder, out, fingerprint)
    if complete:
        logger.info("%s is complete (%d queries); nothing to do", out, len(queries))
        return BatchRerankResult(str(out), 0, len(queries), 0, 0.0)
    chunks = [list(queries[start:start + queries_per_chunk]) for start in range(0, len(queries), queries_per_chunk)]
    todo = [index for index in range(len(chunks)) if index not in done]
    resumed_after = sum(len(chunks[index]) for index in done)
    if done:
        logger.info("resuming %s: %d of %d chunks are on disk (%d queries)", out, len(done), len(chunks),
                    resumed_after)
    pairs = 0
    if todo:
        own_pool = pool is None
        pool = pool or RayPool(model, model_options, ray_config)
        bar = tqdm(total=len(queries), initial=resumed_after, desc="reranking on Ray", unit="query",
                   disable=not show_progress)
        jobs = ((index, chunks[index], [list(candidates.get(q.query_id, []))[:rerank_k] for q in chunks[index]])
                for index in todo)
        try:
            for index, scores in pool.score(jobs, texts):
                chunk = chunks[index]
                reranked = fused_run(chunk, candidates, dict(zip((q.query_id for q in chunk), scores)), rerank_k,
                                     None, RerankConfig.alpha)
                _durable_write(folder / f"{index:06d}.trec",
                               "".join(trec_lines(q.query_id, reranked[q.query_id], tag) for q in chunk))
                pairs += sum(len(s) for s in scores)
                bar.update(len(chunk))
        finally:
            bar.close()
            if own_pool:
                pool.close()
        logger.info("Ray: %d chunks, %.1f actor-seconds, per actor %s", pool.stats.chunks, pool.stats.actor_seconds,
                    pool.stats.by_actor)
    _join_chunks(folder, out, len(chunks))
    return BatchRerankResult(str(out), len(queries) - resumed_after, resumed_after, pairs,
                             time.perf_counter() - started)


def _join_chunks(folder: Path, out: Path, count: int) -> None:
    """The chunk files, in order, into the output (written whole, then renamed); then the chunks go and a
    ``complete.json`` stays, so the same command again has nothing to do."""
    missing = [index for index in range(count) if not (folder / f"{index:06d}.trec").is_file()]
    if missing:
        raise RerankAborted(f"{len(missing)} chunks are missing from {folder} (e.g. {missing[0]}); run the same "
                            "command again to score them")
    temporary = out.with_name(out.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for index in range(count):
            handle.write((folder / f"{index:06d}.trec").read_text(encoding="utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(out)
    _durable_write(folder / "complete.json", json.dumps({"chunks": count, "at": round(time.time(), 3)}) + "\n")
    for index in range(count):
        (folder / f"{index:06d}.trec").unlink()
