"""Long documents as overlapping passage windows, and a document's score as its best window's ("MaxP").

A cross-encoder reads ``max_length`` tokens of a (query, document) pair; the rest of a longer document is
cut off, and with it whatever made the document relevant when that comes late (71% of SciFact's abstracts
are longer than 256 tokens). MaxP (Dai & Callan, 2019) scores each window of the document with the query
and keeps the highest score. Windows are cut on the model's own tokens, so each one fits ``max_length``
beside a query of up to ``query_budget`` tokens, and neighbouring windows share ``overlap`` tokens so a
sentence cut by one boundary is whole in the next window.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from esrerank_errors import InputError

SETTINGS_FILE = "esrerank_reranker.json"  # how a model was trained, read back when it is loaded
PASSAGE_MODES = ("first", "maxp")


@dataclass(frozen=True)
class PassageConfig:
    """mode: ``first`` (default: one window, the start of the document, cut at ``max_length`` as in
    sentence-transformers) or ``maxp`` (every window scored, the best one counts). query_budget: tokens
    kept for the query when cutting windows (default 32: MS MARCO queries average ~10 tokens, SciFact
    claims ~20; a longer query takes its tokens from the window's end, as ``longest_first`` truncates).
    overlap: tokens shared by neighbouring windows (default 32, about one sentence of an abstract).
    max_windows: windows kept per document (default 8; the rest of a very long document is dropped, so a
    single document cannot cost more than 8 pairs)."""

    mode: str = "first"
    query_budget: int = 32
    overlap: int = 32
    max_windows: int = 8

    def __post_init__(self):
        if self.mode not in PASSAGE_MODES:
            raise InputError(f"passage mode must be one of {PASSAGE_MODES}, got {self.mode!r}")
        if self.query_budget < 1 or self.overlap < 0 or self.max_windows < 1:
            raise InputError("need query_budget >= 1, overlap >= 0 and max_windows >= 1")

    def window_tokens(self, max_length: int) -> int:
        """Document tokens per window: what ``max_length`` leaves after the query and 3 special tokens."""
        window = max_length - self.query_budget - 3
        if window <= self.overlap:
            raise InputError(f"max_length {max_length} leaves {window} tokens for a window with maxp passages, not "
                             f"more than the overlap {self.overlap}: raise max_length (--max-length) or lower "
                             "query_budget/overlap")
        return window


def split_windows(tokenizer, texts: Sequence[str], window: int, overlap: int, max_windows: int) -> list[list[str]]:
    """Each text cut into windows of ``window`` tokens of ``tokenizer`` sharing ``overlap`` tokens; a text
    that fits is one window, itself. Windows are substrings of the text (cut at token boundaries), so
    they go through the ordinary tokenization with the query afterwards."""
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                        return_attention_mask=False, return_token_type_ids=False,
                        verbose=False)  # longer than max_length is the point here, not a warning
    stride = window - overlap
    windows = []
    for text, offsets in zip(texts, encoded["offset_mapping"]):
        if len(offsets) <= window:
            windows.append([text])
            continue
        starts = list(range(0, len(offsets) - overlap, stride))[:max_windows]
        windows.append([text[offsets[s][0]:offsets[min(s + window, len(offsets)) - 1][1]] for s in starts])
    return windows


def window_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int,
                 config: PassageConfig) -> tuple[list[tuple[str, str]], np.ndarray]:
    """(query, window) pairs for every window of every pair's document, and the index of the pair each
    came from (for ``best_of_windows``)."""
    windows = split_windows(tokenizer, [d for _, d in pairs], config.window_tokens(max_length), config.overlap,
                            config.max_windows)
    owners = np.repeat(np.arange(len(pairs)), [len(w) for w in windows])
    return [(pairs[i][0], text) for i, texts in enumerate(windows) for text in texts], owners


def best_of_windows(scores: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """The highest window score of each of ``count`` documents (``owners[i]``: document of window i)."""
    best = np.full(count, -np.inf, dtype=np.float32)
    np.maximum.at(best, owners, scores)
    return best


@dataclass(frozen=True)
class RerankerSettings:
    """How a model was trained, saved beside it (``esrerank_reranker.json``) so that scoring it later
    reads documents the same way: ``max_length`` and the passage handling."""

    max_length: int
    passages: PassageConfig = field(default_factory=PassageConfig)

    def save(self, model_dir) -> None:
        Path(model_dir, SETTINGS_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, model_dir) -> "RerankerSettings | None":
        """The settings saved in a local model folder; None for hub ids and folders without them."""
        path = Path(model_dir).expanduser() / SETTINGS_FILE
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return cls(max_length=int(raw["max_length"]), passages=PassageConfig(**raw.get("passages", {})))
