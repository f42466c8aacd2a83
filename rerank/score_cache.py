"""A persistent cache of cross-encoder scores, for pairs scored again: an evaluation re-run with another fusion
setting, a deeper first stage that adds candidates below the ones already scored, a second model compared on
the same run.

The cache is one SQLite file: a key per pair (BLAKE2b-128 of the query and the document text), its float32
score. It belongs to one model: the file records the model's fingerprint (a hash of its files and of every
option that changes a score) and refuses another model. Only scores that depend on the pair alone are cached:
a bf16/fp16 model that rescores its rankings' tops in float32 gives a pair a score that depends on the other
pairs of its ranking, so it is refused (use ``dtype="float32"``, or ``exact_top_k=None``).

Whether it pays, measured: docs/batch_rerank.md ("A score cache").
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from esrerank_errors import DataError, InputError

logger = logging.getLogger(__name__)

_NOT_MODEL = (".sqlite", ".sqlite-journal", ".sqlite-wal", ".sqlite-shm")
_QUERY_CHUNK = 900  # keys a SELECT asks for at once (SQLite's default limit on bound variables is 999+)


def model_fingerprint(model) -> str:
    """A hash of what decides a score: the model's files (names, sizes, contents) where it is a local
    folder, else its name (a hub model: pin a revision by downloading it to a folder, or a new upload would
    be answered with the old scores), and its scoring options (``repr``: max length, passages, dtype, runtime,
    device; and the activation)."""
    digest = hashlib.sha256(f"{model!r} activation={getattr(model, 'activation', None)!r}".encode())
    name = getattr(model, "model_name", None)
    folder = Path(name).expanduser() if name else None
    if folder is not None and folder.is_dir():
        # the model's files; not a cache or its journal kept beside them, which changes with every write
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(_NOT_MODEL)):
            digest.update(f"{path.relative_to(folder)}:{path.stat().st_size}".encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def pair_key(query: str, text: str) -> bytes:
    # the query's length first: no (query, text) pair can be mistaken for another
    return hashlib.blake2b(f"{len(query)}:{query}{text}".encode(), digest_size=16).digest()


class ScoreCache:
    """A reranker (``predict(pairs)``) that answers pairs scored before from ``path`` and scores the rest with
    ``reranker``, adding them.

    Args:
        path: the SQLite file (created with its folder).
        reranker: the cross-encoder behind the cache, e.g. ``rerank.CrossEncoder(..., dtype="float32")``.
        fingerprint: what identifies the model. Default None: :func:`model_fingerprint` of ``reranker``.
    """

    def __init__(self, path, reranker, fingerprint: str | None = None):
        precision = getattr(reranker, "precision", None)
        if precision is not None and precision.rescores:
            raise InputError("a score cache needs scores that depend on the pair alone; this model runs in "
                             f"{str(precision.dtype).removeprefix('torch.')} and rescores each ranking's top "
                             f"{precision.exact_top_k} in float32: use --dtype float32 with --score-cache")
        self.reranker = reranker
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint or model_fingerprint(reranker)
        self.hits = 0
        self.misses = 0
        self._db = sqlite3.connect(self.path)
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS scores (pair BLOB PRIMARY KEY, score REAL) WITHOUT ROWID")
        row = self._db.execute("SELECT value FROM meta WHERE name = 'model'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('model', ?), ('about', ?)",
                             (self.fingerprint, repr(reranker)))
            self._db.commit()
        elif row[0] != self.fingerprint:
            about = self._db.execute("SELECT value FROM meta WHERE name = 'about'").fetchone()
            raise DataError(self.path, f"holds the scores of another model ({about[0] if about else 'unknown'}); "
                                       "give each model its own cache file")

    def predict(self, pairs: Sequence[Sequence[str]], rankings: Sequence | None = None) -> np.ndarray:
        keys = [pair_key(query, text) for query, text in pairs]
        known: dict[bytes, float] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _QUERY_CHUNK):
            chunk = unique[start:start + _QUERY_CHUNK]
            marks = ",".join("?" * len(chunk))
            known.update(self._db.execute(f"SELECT pair, score FROM scores WHERE pair IN ({marks})", chunk).fetchall())
        missing = [i for i, key in enumerate(keys) if key not in known]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            scores = np.asarray(self.reranker.predict([pairs[i] for i in missing],
                                                      None if rankings is None else [rankings[i] for i in missing]),
                                dtype=np.float32)
            fresh = {keys[i]: float(score) for i, score in zip(missing, scores)}
            self._db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?)", fresh.items())
            self._db.commit()
            known.update(fresh)
        return np.array([known[key] for key in keys], dtype=np.float32)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"ScoreCache({str(self.path)!r}, {self.reranker!r})"
