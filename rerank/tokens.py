"""Tokenized (query, document) pairs kept flat, and the padded batches a model reads, built without
Python loops over rows.

Why not the tokenizer's lists: converting each pair's encoding to a dict of Python lists and copying
them row by row into a padded array took more time than the GPU's forward pass (a cProfile of 32,000
MS MARCO-shaped pairs on an H100: ~1.1 s converting encodings and ~0.75 s filling rows in 3.6 s; see the
docs/batch_rerank.md). Here a fast tokenizer's Rust encodings go straight to one flat array of
token ids, and a batch is one fancy-indexing gather.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from typing import Callable, Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class TokenizedPairs:
    """Token ids of many pairs, end to end: pair ``i`` is ``ids[starts[i]:starts[i] + lengths[i]]``.

    ``types`` holds the token type ids the same way, or is None for models that take none."""

    ids: np.ndarray  # int64, all pairs' token ids, end to end
    types: np.ndarray | None  # int64, same layout, or None
    starts: np.ndarray  # int64, one per pair
    lengths: np.ndarray  # int64, one per pair

    def __len__(self) -> int:
        return len(self.lengths)

    @classmethod
    def concatenate(cls, parts: Sequence[TokenizedPairs]) -> TokenizedPairs:
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0] + [len(part.ids) for part in parts[:-1]])
        return cls(np.concatenate([part.ids for part in parts]),
                   None if parts[0].types is None else np.concatenate([part.types for part in parts]),
                   np.concatenate([part.starts + offset for part, offset in zip(parts, offsets)]),
                   np.concatenate([part.lengths for part in parts]))

    def padded(self, rows: np.ndarray, width: int, pad_id: int) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask`` (and ``token_type_ids``) of the pairs ``rows``, right-padded
        to ``width`` (at least the longest of them)."""
        columns = np.arange(width)
        mask = columns[None, :] < self.lengths[rows][:, None]
        positions = np.where(mask, self.starts[rows][:, None] + columns[None, :], 0)
        batch = {"input_ids": np.where(mask, self.ids[positions], pad_id), "attention_mask": mask.astype(np.int64)}
        if self.types is not None:
            batch["token_type_ids"] = np.where(mask, self.types[positions], 0)
        return batch


def tokenize_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int,
                   with_types: bool) -> TokenizedPairs:
    """Tokenize ``pairs`` as ``tokenizer(queries, documents, truncation="longest_first",
    max_length=max_length)`` does (the tests hold the two equal), straight from the Rust encodings when
    the tokenizer is a fast one."""
    if getattr(tokenizer, "is_fast", False):
        backend = tokenizer.backend_tokenizer
        # what transformers sets on the backend before its own encode_batch call
        backend.enable_truncation(max_length=max_length, stride=0, strategy="longest_first",
                                  direction=tokenizer.truncation_side)
        backend.no_padding()
        backend.encode_special_tokens = getattr(tokenizer, "split_special_tokens", False)
        encodings = backend.encode_batch(list(pairs), add_special_tokens=True)
        ids = [encoding.ids for encoding in encodings]
        types = [encoding.type_ids for encoding in encodings] if with_types else None
    else:
        encoded = tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation="longest_first",
                            max_length=max_length, padding=False, return_attention_mask=False,
                            return_token_type_ids=with_types)
        ids = encoded["input_ids"]
        types = encoded["token_type_ids"] if with_types else None
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    total = int(lengths.sum())
    starts = np.zeros(len(ids), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    flat_ids = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=total)
    flat_types = np.fromiter(chain.from_iterable(types), dtype=np.int64, count=total) if with_types else None
    return TokenizedPairs(flat_ids, flat_types, starts, lengths)


@contextmanager
def tokenized_chunks(tokenize: Callable[[Sequence[tuple[str, str]]], TokenizedPairs],
                     pairs: Sequence[tuple[str, str]], chunk: int, ahead: bool) -> Iterator[Iterator[TokenizedPairs]]:
    """The pairs tokenized ``chunk`` at a time by ``tokenize``; with ``ahead`` the next chunk is tokenized in a
    thread (the fast tokenizers release the GIL) while the caller scores this one. Without it no thread is
    started: a service scoring small requests one at a time paid a thread per call."""
    if not ahead:
        yield (tokenize(pairs[start:start + chunk]) for start in range(0, len(pairs), chunk))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as tokenizing:
        def upcoming_chunks() -> Iterator[TokenizedPairs]:
            upcoming = tokenizing.submit(tokenize, pairs[:chunk])
            for start in range(0, len(pairs), chunk):
                tokens = upcoming.result()
                if start + chunk < len(pairs):
                    upcoming = tokenizing.submit(tokenize, pairs[start + chunk:start + 2 * chunk])
                yield tokens
        yield upcoming_chunks()

MAX_BATCH_SIZE = 256  # pairs in one batch, whatever their length


def default_batch_tokens(device_type: str) -> int:
    """Token budget of one batch: 4,096 on CPU (the fastest measured there: activations stay in cache; see
    docs/reranking_speed.md) and 65,536 on GPU (large enough to keep the tensor cores busy)."""
    return 65_536 if device_type == "cuda" else 4_096


def length_batches(indices: np.ndarray, lengths: np.ndarray, max_tokens: int, max_size: int,
                   cut_short: bool) -> Iterator[np.ndarray]:
    """The pairs ``indices`` sorted longest first (``lengths`` is indexed like the pairs; ties keep their
    order), cut into batches whose padded size fits ``max_tokens`` and that hold at most ``max_size`` pairs.
    ``cut_short`` (on CPU) also ends a batch before the first pair shorter than 3/4 of its longest, so at
    most a quarter of its work is padding: a 10-document request of MS MARCO-like passages was 44% padding
    in one batch, and cut this way it scored 1.44x faster (docs/reranking_speed.md); large sorted inputs are
    cut as before.
    (On a GPU, fewer, larger batches matter more than padding; not measured there, so not cut.)"""
    order = indices[np.argsort(-lengths[indices], kind="stable")]
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, min(max_size, max_tokens // longest))
        if cut_short:
            size = max(1, int(np.count_nonzero(lengths[order[start:start + size]] * 4 >= longest * 3)))
        yield order[start:start + size]
        start += size
