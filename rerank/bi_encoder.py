"""A bi-encoder as a teacher for mining: cosine similarity of query and document embeddings.

Used to drop likely false negatives (documents a teacher scores as close to the query as its judged
positives), as sentence-transformers' ``mine_hard_negatives`` does with an embedding model. A bi-encoder
is the teacher one usually has before any cross-encoder is trained (all-MiniLM-L6-v2 here).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class BiEncoder:
    """``predict(pairs)`` → cosine similarity of each (query, document) pair.

    Args:
        model: a sentence-transformers model (hub id or folder); a plain transformers encoder folder
            gets mean pooling, which is what all-MiniLM-L6-v2 uses.
        device: as in ``CrossEncoder`` (default: first available).
        batch_size: texts per encoding batch (default 64).
        max_length: tokens per text (default 256, all-MiniLM-L6-v2's training length).

    Each distinct text is encoded once and kept: mining scores the same documents for many queries.
    """

    def __init__(self, model: str, device: str | None = None, batch_size: int = 64, max_length: int = 256):
        from sentence_transformers import SentenceTransformer

        from .device import detect_device

        self.model_name = str(model)
        self.model = SentenceTransformer(self.model_name, device=str(detect_device(device)))
        self.model.max_seq_length = max_length
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    def predict(self, pairs: Sequence[Sequence[str]]) -> np.ndarray:
        texts = [text for pair in pairs for text in pair]
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.model.encode(missing, batch_size=self.batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
            self._cache.update(zip(missing, vectors))
        return np.array([float(self._cache[q] @ self._cache[d]) for q, d in pairs], dtype=np.float32)

    def __repr__(self) -> str:
        return f"BiEncoder({self.model_name!r})"
