"""Hard negatives from the first stage, for training cross-encoders.

For each training query: the first stage's top ``retrieve_k`` candidates, known positives removed, negatives
taken from a window of that list, optionally dropped when a teacher cross-encoder scores them too close to
the positives (false-negative filter, with the margins of sentence-transformers' ``mine_hard_negatives``),
then ``num_negatives`` of them, the first ones or a seeded random sample, and ``num_random_negatives``
easy negatives drawn at random from the whole corpus (positives and the hard negatives excluded): with
only hard negatives a model never sees an obviously wrong document, and on SciFact it generalised worse
(see docs/training.md). Mined from an engine index (the user's own query), "the whole corpus" is every
document the first stage returned for any query, so the query's filters hold for easy negatives too, and
texts are read from the index as the reranker will read them.

The window is over the candidate list *after* positives are removed, 0-based: positions
``range_min <= i < range_max``. Rows are written as a HF ``datasets`` dataset in one of the formats the
sentence-transformers cross-encoder losses read:

- ``labeled-list``: ``{"query", "docs", "labels"}``: positives (label 1) then negatives (0). LambdaLoss,
  ListNet, PListMLE, RankNet, ListMLE.
- ``labeled-pair``: ``{"query", "passage", "label"}``: one row per document. BinaryCrossEntropyLoss.
- ``triplet``: ``{"query", "positive", "negative"}``: one row per (positive, negative).
- ``n-tuple``: ``{"query", "positive", "negative_1" … "negative_n"}``: one row per positive; queries
  with fewer than ``num_negatives`` negatives are skipped.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from esrerank_errors import DataError, InputError
from rerank.training_config import DEV_SAMPLES_FILE
from retrieval.records import Hit, Query

from .retrieve_rerank import first_stage_run

FORMATS = ("labeled-list", "labeled-pair", "triplet", "n-tuple")


@dataclass(frozen=True)
class MiningConfig:
    """retrieve_k: candidates per query from the first stage (default 100). range_min/range_max: the window
    of negatives after positives are removed (default 0/100). num_negatives: hard ones per query (default 6).
    sampling: ``random`` (a seeded sample from the whole window, default) or ``top`` (its first ones). On
        SciFact (docs/training.md) a model trained on 6 negatives drawn across BM25's top 100 reranked 200
        held-out queries' top 100 at nDCG@10 0.7549 against 0.6783 with the top 6: with only the top of the
        list, a model never learns what to do with deep candidates, which it then ranks above relevant ones.
    num_random_negatives: easy negatives per query drawn at random from the whole corpus (default 3).
    absolute_margin / relative_margin: teacher filter; a negative is dropped when its teacher score is
    above ``min positive score - absolute_margin``, or above ``min positive score × (1 - relative_margin)``.
    output_format: see the module docstring. seed: for ``random`` sampling (default 12)."""

    retrieve_k: int = 100
    range_min: int = 0
    range_max: int = 100
    num_negatives: int = 6
    num_random_negatives: int = 3
    sampling: str = "random"
    absolute_margin: float | None = None
    relative_margin: float | None = None
    output_format: str = "labeled-list"
    seed: int = 12

    def __post_init__(self):
        if self.sampling not in ("top", "random"):
            raise InputError(f"sampling (--sampling) must be 'top' or 'random', got {self.sampling!r}")
        if self.output_format not in FORMATS:
            raise InputError(f"output_format (--format) must be one of {FORMATS}, got {self.output_format!r}")
        if not 0 <= self.range_min < self.range_max:
            raise InputError(f"the window needs 0 <= range_min < range_max (--range-min, --range-max), got "
                             f"{self.range_min} and {self.range_max}")
        if self.num_negatives < 1 or self.retrieve_k < 1:
            raise InputError(f"num_negatives (--num-negatives) and retrieve_k (--retrieve-k) must be at least 1, "
                             f"got {self.num_negatives} and {self.retrieve_k}")
        if self.num_random_negatives < 0:
            raise InputError(f"num_random_negatives (--num-random-negatives) must be at least 0, got "
                             f"{self.num_random_negatives}")
        if self.absolute_margin is not None and self.relative_margin is not None:
            raise InputError("give absolute_margin or relative_margin (--absolute-margin, --relative-margin), "
                             "not both")

    def check_teacher(self, teacher) -> None:
        """A margin filters negatives by a teacher's scores: refused without a teacher."""
        if (self.absolute_margin is not None or self.relative_margin is not None) and teacher is None:
            raise InputError("a margin (--absolute-margin or --relative-margin) needs a teacher model (--teacher)")


@dataclass
class MiningStats:
    queries: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason → count
    negatives_per_query: list[int] = field(default_factory=list)
    positives: int = 0
    positives_in_candidates: int = 0
    removed_by_teacher: int = 0
    rows: int = 0

    def summary(self) -> dict:
        negatives = np.array(self.negatives_per_query or [0])
        return {
            "queries": self.queries, "kept": self.kept, "skipped": dict(self.skipped), "rows": self.rows,
            "negatives_per_query": {"mean": float(negatives.mean()), "min": int(negatives.min()),
                                    "max": int(negatives.max())},
            "positives": self.positives, "positives_in_candidates": self.positives_in_candidates,
            "first_stage_recall_at_depth": self.positives_in_candidates / self.positives if self.positives else 0.0,
            "removed_by_teacher": self.removed_by_teacher,
        }


def _query_rng(seed: int, query_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{query_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # the same per query, whatever the order


def mine_hard_negatives(queries: Sequence[Query], qrels: Mapping[str, Mapping[str, int]],
                        candidates: Mapping[str, Sequence[Hit]], texts: Mapping[str, str],
                        config: MiningConfig | None = None, teacher=None, show_progress: bool = True,
                        random_pool: Sequence[str] | None = None) -> tuple[list[dict], MiningStats]:
    """Rows of the chosen format, and statistics. ``candidates``: first-stage hits per query id (at
    least ``retrieve_k`` deep); ``texts``: doc id → text; ``teacher``: anything with ``predict(pairs)``;
    ``random_pool``: the documents easy negatives are drawn from (default: every document of ``texts``)."""
    config = config or MiningConfig()
    config.check_teacher(teacher)
    stats = MiningStats()
    rows: list[dict] = []
    corpus_ids = (list(texts) if random_pool is None else list(random_pool)) if config.num_random_negatives else []
    for query in tqdm(queries, desc="mining", unit="query", disable=not show_progress):
        stats.queries += 1
        positives = [d for d, grade in qrels.get(query.query_id, {}).items() if grade > 0 and d in texts]
        if not positives:
            stats.skipped["no judged positive in the corpus"] += 1
            continue
        hits = list(candidates.get(query.query_id, []))[: config.retrieve_k]
        positive_set = set(positives)
        stats.positives += len(positives)
        stats.positives_in_candidates += sum(h.doc_id in positive_set for h in hits)
        window = [h.doc_id for h in hits if h.doc_id not in positive_set][config.range_min:config.range_max]
        margins = config.absolute_margin is not None or config.relative_margin is not None
        if teacher is not None and window and margins:
            scores = teacher.predict([(query.text, texts[d]) for d in positives + window])
            floor = float(np.min(scores[: len(positives)]))
            limit = floor - config.absolute_margin if config.absolute_margin is not None \
                else floor * (1 - config.relative_margin)
            kept = [d for d, s in zip(window, scores[len(positives):]) if s <= limit]
            stats.removed_by_teacher += len(window) - len(kept)
            window = kept
        if config.sampling == "random" and len(window) > config.num_negatives:
            negatives = _query_rng(config.seed, query.query_id).sample(window, config.num_negatives)
        else:
            negatives = window[: config.num_negatives]
        if not negatives:
            stats.skipped["no negative left in the window"] += 1
            continue
        if config.num_random_negatives:
            negatives = negatives + _random_negatives(corpus_ids, positive_set | set(negatives),
                                                      config.num_random_negatives,
                                                      _query_rng(config.seed + 1, query.query_id))
        if config.output_format == "n-tuple" and len(negatives) < config.num_negatives + config.num_random_negatives:
            stats.skipped[f"fewer than {config.num_negatives + config.num_random_negatives} negatives (n-tuple)"] += 1
            continue
        stats.kept += 1
        stats.negatives_per_query.append(len(negatives))
        rows.extend(_rows(query.text, [texts[d] for d in positives], [texts[d] for d in negatives], config))
    stats.rows = len(rows)
    return rows, stats


def _random_negatives(corpus_ids: list[str], excluded: set[str], count: int, rng: random.Random) -> list[str]:
    """``count`` distinct corpus documents not in ``excluded`` (fewer only when the corpus is that small)."""
    count = min(count, len(corpus_ids) - len(excluded))
    excluded = set(excluded)  # the chosen join it; the caller's set stays as it was
    chosen: list[str] = []
    while len(chosen) < count:  # rejection sampling: the excluded few are rarely drawn from a real corpus
        doc_id = corpus_ids[rng.randrange(len(corpus_ids))]
        if doc_id not in excluded:
            excluded.add(doc_id)
            chosen.append(doc_id)
    return chosen


def _rows(query: str, positives: list[str], negatives: list[str], config: MiningConfig) -> list[dict]:
    if config.output_format == "labeled-list":
        return [{"query": query, "docs": positives + negatives, "labels": [1] * len(positives) + [0] * len(negatives)}]
    if config.output_format == "labeled-pair":
        return ([{"query": query, "passage": p, "label": 1} for p in positives] +
                [{"query": query, "passage": n, "label": 0} for n in negatives])
    if config.output_format == "triplet":
        return [{"query": query, "positive": p, "negative": n} for p in positives for n in negatives]
    return [{"query": query, "positive": p, **{f"negative_{i}": n for i, n in enumerate(negatives, start=1)}}
            for p in positives]


def split_queries(queries: Sequence[Query], dev_size: int, seed: int = 12) -> tuple[list[Query], list[Query]]:
    """(train, dev): ``dev_size`` queries chosen by a seeded hash of their ids, independent of file order."""
    if not 0 < dev_size < len(queries):
        raise InputError(f"dev queries (--dev-queries) must be between 1 and {len(queries) - 1} (of {len(queries)} "
                         f"queries, at least one is left for training), got {dev_size}")
    def key(query):
        return hashlib.sha256(f"{seed}:{query.query_id}".encode()).hexdigest()
    dev_ids = {q.query_id for q in sorted(queries, key=key)[:dev_size]}
    return [q for q in queries if q.query_id not in dev_ids], [q for q in queries if q.query_id in dev_ids]


def dev_samples(queries: Sequence[Query], qrels, candidates: Mapping[str, Sequence[Hit]], texts: Mapping[str, str],
                retrieve_k: int) -> list[dict]:
    """The trainer's dev set: each query with its judged positives and the first stage's top ``retrieve_k``
    (positives the first stage missed stay missed, as in the real pipeline)."""
    samples = []
    for query in queries:
        positives = [texts[d] for d, grade in qrels.get(query.query_id, {}).items() if grade > 0 and d in texts]
        if positives:
            samples.append({"query_id": query.query_id, "query": query.text, "positive": positives,
                            "documents": [texts[h.doc_id] for h in candidates.get(query.query_id, [])[:retrieve_k]]})
    return samples


def save_dev_samples(samples: list[dict], out_dir) -> Path:
    """Write the dev samples beside mined rows (``dev_samples.jsonl``), where ``esrerank train`` finds them."""
    path = Path(out_dir) / DEV_SAMPLES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return path


def load_dev_samples(path) -> list[dict]:
    """The dev samples ``save_dev_samples`` wrote; a line that is not one names the file and line."""
    path = Path(path)
    samples = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                sample = json.loads(line)
            except ValueError as exc:
                raise DataError(path, f"not JSON ({exc})", line=number) from None
            if not isinstance(sample, dict) or not {"query", "positive", "documents"} <= set(sample):
                raise DataError(path, "a dev sample needs query, positive and documents", line=number)
            samples.append(sample)
    return samples


def save_mined(rows: list[dict], stats: MiningStats, config: MiningConfig, out_dir, extra: dict | None = None):
    """Save as a HF ``datasets`` dataset (``load_from_disk(out_dir)``), with ``stats.json`` and
    ``mining_config.json`` beside it."""
    import datasets

    out_dir = Path(out_dir)
    # An explicit fingerprint: datasets 5.2 with pyarrow 26 has crashed while hashing one.
    fingerprint = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    dataset = datasets.Dataset(datasets.Dataset.from_list(rows).data, fingerprint=fingerprint)
    dataset.save_to_disk(str(out_dir))
    (out_dir / "stats.json").write_text(json.dumps(stats.summary(), indent=2) + "\n")
    (out_dir / "mining_config.json").write_text(json.dumps({**asdict(config), **(extra or {})}, indent=2) + "\n")
    return dataset


@dataclass
class MiningResult:
    """What :func:`mine_collection` wrote: the training rows' summary, and the held-out dev queries."""

    out_dir: Path
    summary: dict
    dev_queries: list[str]
    dev_samples_path: Path | None


def default_dev_size(queries: int) -> int:
    """Dev queries held out by default: a fifth of the queries, at most 100."""
    return min(100, queries // 5)


def mine_collection(collection, retriever, out_dir, config: MiningConfig | None = None, teacher=None,
                    dev_queries: int | None = None, dev_retrieve_k: int = 100, exclude: set[str] | None = None,
                    first_stage_description: str = "", show_progress: bool = False,
                    dev_seed: int | None = None) -> MiningResult:
    """What ``esrerank mine`` does: hold out a dev split, mine hard negatives for the other queries from
    ``retriever``'s candidates, save the rows and the dev split's candidates under ``out_dir``.

    Args:
        collection: the training collection (``retrieval.load_collection(data, "train")``).
        retriever: the first stage (e.g. ``InMemoryBM25(collection.documents)``).
        out_dir: where the HF dataset, ``stats.json`` and ``dev_samples.jsonl`` go.
        config: mining settings. Default ``MiningConfig()``.
        teacher: a model whose scores filter likely false negatives (see ``MiningConfig`` margins).
        dev_queries: queries held out as the dev split ``esrerank train`` evaluates on. Default None:
            ``default_dev_size`` (a fifth, at most 100); 0: none.
        dev_retrieve_k: first-stage candidates kept per dev query. Default 100 (as deep as evaluation reranks).
        exclude: query ids to leave out entirely (e.g. a test split).
        dev_seed: the seed of the dev split's hash. Default None: ``config.seed``; the recipe, which has
            already drawn its held-out split with that seed, draws the dev split with another.

    Returns:
        A :class:`MiningResult`.
    """
    config = config or MiningConfig()
    config.check_teacher(teacher)  # before the first stage's work
    queries = [q for q in collection.queries if q.query_id not in (exclude or set())]
    dev_size = default_dev_size(len(queries)) if dev_queries is None else dev_queries
    held_out: list[Query] = []
    if dev_size:
        queries, held_out = split_queries(queries, dev_size, config.seed if dev_seed is None else dev_seed)
    depth = max(config.retrieve_k, dev_retrieve_k)
    texts, random_pool = collection.texts(), None
    if hasattr(retriever, "missing_doc_ids"):
        # An engine index. Ties in its order depend on its merge history, so they are put in doc id order,
        # from a few hits deeper than needed so that which tied documents make the cut does not depend on it
        # either. Texts are read as the index holds them, and easy negatives are drawn only among documents
        # the first stage returned, so a production query's filters hold for every negative.
        deeper = first_stage_run(retriever, queries + held_out, depth + TIE_MARGIN)
        candidates = {qid: ties_by_doc_id(hits)[:depth] for qid, hits in deeper.items()}
        texts = index_texts(retriever, candidates, collection.qrels)
        random_pool = list(dict.fromkeys(h.doc_id for hits in candidates.values() for h in hits))
    else:
        candidates = first_stage_run(retriever, queries + held_out, depth)
    rows, stats = mine_hard_negatives(queries, collection.qrels, candidates, texts, config, teacher,
                                      show_progress=show_progress, random_pool=random_pool)
    save_mined(rows, stats, config, out_dir, extra={"first_stage": first_stage_description,
                                                    "data": collection.name,
                                                    "dev_queries": [q.query_id for q in held_out]})
    samples_path = None
    if held_out:
        samples = dev_samples(held_out, collection.qrels, candidates, texts, dev_retrieve_k)
        samples_path = save_dev_samples(samples, out_dir)
    return MiningResult(Path(out_dir), stats.summary(), [q.query_id for q in held_out], samples_path)


TIE_MARGIN = 10  # hits searched past the depth an engine's run is cut at, for ties across the cut


def ties_by_doc_id(hits: Sequence[Hit]) -> list[Hit]:
    """Hits with equal scores in doc id order, ranks renumbered. An engine orders ties by its internal
    document order, which depends on the index's segment and merge history: two indexes of the same
    documents can order them differently, and a dataset mined from them would differ for no reason."""
    ordered = sorted(hits, key=lambda hit: (-hit.score, hit.doc_id))
    return [Hit(hit.doc_id, hit.score, rank) for rank, hit in enumerate(ordered, start=1)]


def index_texts(searcher, candidates: Mapping[str, Sequence[Hit]], qrels) -> dict[str, str]:
    """doc id → text as an engine index holds it (the fields its searcher reads), for every candidate and
    every judged document the index has: mined from a user's index, training sees what the reranker will."""
    ids = [h.doc_id for hits in candidates.values() for h in hits] + [doc for docs in qrels.values() for doc in docs]
    return searcher.texts_in_index(ids) if ids else {}


def load_mined(dataset_dir):
    """A training dataset written by :func:`save_mined` (``esrerank mine``), checked to hold labeled lists."""
    import datasets

    dataset_dir = Path(dataset_dir)
    if not (dataset_dir / "dataset_info.json").is_file():
        raise DataError(dataset_dir, "not a dataset written by 'esrerank mine' (no dataset_info.json)")
    dataset = datasets.load_from_disk(str(dataset_dir))
    if not {"query", "docs", "labels"} <= set(dataset.column_names):
        raise DataError(dataset_dir, "training needs labeled-list rows (query, docs, labels); "
                                     f"has {dataset.column_names}")
    return dataset


def training_dev_samples(dataset_dir, evaluation=None, query_ids=None, retrieve_k: int = 100) -> list[dict] | None:
    """The dev split ``esrerank train`` evaluates on: the queries of ``evaluation`` (a collection; only
    ``query_ids`` when given) with their BM25 top ``retrieve_k``, or else the split ``esrerank mine`` held
    out beside the dataset; None when there is neither."""
    if evaluation is not None:
        from retrieval.bm25 import InMemoryBM25

        queries = [q for q in evaluation.queries if query_ids is None or q.query_id in query_ids]
        candidates = first_stage_run(InMemoryBM25(evaluation.documents), queries, retrieve_k)
        return dev_samples(queries, evaluation.qrels, candidates, evaluation.texts(), retrieve_k)
    path = Path(dataset_dir) / DEV_SAMPLES_FILE
    return load_dev_samples(path) if path.is_file() else None
