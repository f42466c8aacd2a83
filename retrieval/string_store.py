"""Millions of strings (document texts, document ids) in one UTF-8 buffer with offsets.

A Python ``str`` costs ~50 bytes of overhead and a list slot; 8.8M MS MARCO ids and texts held that way
take ~4 GB. Here they take their UTF-8 bytes plus 8 bytes of offset each, the buffer lives in a file
(written as the corpus streams by, memory-mapped for reading, so the OS pages it in and out on demand),
and strings are decoded only when asked for. Lookup by value (doc id → position) goes through 64-bit
FNV-1a hashes sorted once, computed by a compiled loop over the buffer.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numba
import numpy as np

_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


@numba.njit(cache=True)
def _fnv1a(buffer, offsets):
    hashes = np.empty(len(offsets) - 1, dtype=np.uint64)
    for i in range(len(offsets) - 1):
        value = _FNV_OFFSET
        for p in range(offsets[i], offsets[i + 1]):
            value = (value ^ np.uint64(buffer[p])) * _FNV_PRIME
        hashes[i] = value
    return hashes


def _hashes(strings: Sequence[str]) -> np.ndarray:
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return _fnv1a(np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8), offsets)


class StringStoreWriter:
    """Appends strings to ``path`` (a new file) in batches; ``finish()`` returns the :class:`StringStore`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._handle = open(self.path, "wb")
        self._lengths: list[np.ndarray] = []

    def add(self, strings: Iterable[str]) -> None:
        encoded = [s.encode("utf-8") for s in strings]
        self._handle.write(b"".join(encoded))
        self._lengths.append(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)))

    def finish(self) -> "StringStore":
        self._handle.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        np.save(self.path.with_suffix(".offsets.npy"), offsets)
        return StringStore.load(self.path)


class StringStore(Sequence[str]):
    """A read-only sequence of strings over a memory-mapped UTF-8 buffer (``<name>``) and its offsets
    (``<name minus suffix>.offsets.npy``). ``store[i]`` decodes one string; ``take(indices)`` many."""

    def __init__(self, buffer: np.ndarray, offsets: np.ndarray, path: Path | None = None):
        self.buffer, self.offsets, self.path = buffer, offsets, path
        self._sorted_hashes: np.ndarray | None = None
        self._hash_order: np.ndarray | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StringStore":
        path = Path(path)
        offsets = np.load(path.with_suffix(".offsets.npy"), mmap_mode="r")
        if offsets[-1] == 0:  # an empty file cannot be memory-mapped
            buffer = np.zeros(0, dtype=np.uint8)
        else:
            buffer = np.memmap(path, dtype=np.uint8, mode="r")
        return cls(buffer, offsets, path)

    @classmethod
    def from_strings(cls, strings: Iterable[str], path: str | os.PathLike) -> "StringStore":
        writer = StringStoreWriter(path)
        writer.add(list(strings))
        return writer.finish()

    def copy_to(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if self.path is None:
            raise ValueError("this store has no file to copy")
        if path.resolve() != self.path.resolve():
            shutil.copyfile(self.path, path)
            shutil.copyfile(self.path.with_suffix(".offsets.npy"), path.with_suffix(".offsets.npy"))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"string {index} out of range (store holds {len(self)})")
        return bytes(self.buffer[self.offsets[index]:self.offsets[index + 1]]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), 65536):
            yield from self.take(np.arange(start, min(start + 65536, len(self))))

    def take(self, indices) -> list[str]:
        """The strings at ``indices`` (any integer array; flattened), decoded."""
        indices = np.asarray(indices, dtype=np.int64).ravel()
        starts, ends = self.offsets[indices].tolist(), self.offsets[indices + 1].tolist()
        data = self.buffer
        return [bytes(data[a:b]).decode("utf-8") for a, b in zip(starts, ends)]

    # --- lookup by value ------------------------------------------------------------------------

    def _hash_index(self) -> tuple[np.ndarray, np.ndarray]:
        if self._sorted_hashes is None:
            hashes = _fnv1a(np.asarray(self.buffer) if len(self.buffer) else np.zeros(1, np.uint8),
                            np.asarray(self.offsets))
            self._hash_order = np.argsort(hashes, kind="stable")
            self._sorted_hashes = hashes[self._hash_order]
        return self._sorted_hashes, self._hash_order

    def positions(self, strings: Sequence[str]) -> np.ndarray:
        """Position of each string in the store (the first, if stored twice); -1 where absent."""
        sorted_hashes, order = self._hash_index()
        wanted = _hashes(strings)
        first = np.searchsorted(sorted_hashes, wanted, side="left")
        found = np.full(len(strings), -1, dtype=np.int64)
        for i, (value, start) in enumerate(zip(strings, first.tolist())):
            j = start
            while j < len(sorted_hashes) and sorted_hashes[j] == wanted[i]:
                if self[order[j]] == value:
                    found[i] = order[j]
                    break
                j += 1
        return found

    def duplicates(self, limit: int = 5) -> list[tuple[str, int, int]]:
        """Up to ``limit`` strings stored more than once: (string, first position, later position)."""
        sorted_hashes, order = self._hash_index()
        same = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
        found = []
        for i in same.tolist():
            a, b = sorted(int(x) for x in (order[i], order[i + 1]))
            if self[a] == self[b]:
                found.append((self[a], a, b))
                if len(found) >= limit:
                    break
        return found
