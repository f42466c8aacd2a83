"""The number type a cross-encoder runs in, and the float32 rescoring that keeps the top of each ranking
what float32 gives.

On hardware with fast bf16 the weights run in bf16 (``rerank.device.resolve_dtype``); the few pairs whose
place in their ranking's top ``exact_top_k`` bf16 could have got wrong (those with a neighbour closer than
bf16's error) are scored again in float32, from a float32 copy of the weights loaded on first need.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from esrerank_errors import InputError

from .device import resolve_dtype
from .tokens import TokenizedPairs

logger = logging.getLogger(__name__)

# scores pairs ``indices`` of ``tokens`` with ``model`` into ``scores`` (indexed like ``tokens``)
ScoreFunction = Callable[[object, TokenizedPairs, np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class Precision:
    """``dtype``: the torch dtype the model runs in. ``exact_top_k``: in a reduced precision, the top this
    many of each ranking is made float32's by rescoring (None: off). Build one with :meth:`choose`."""

    dtype: torch.dtype
    exact_top_k: int | None = 10

    def __post_init__(self):
        if self.exact_top_k is not None and self.exact_top_k < 1:
            raise InputError(f"exact_top_k must be None or at least 1, got {self.exact_top_k}")

    @classmethod
    def choose(cls, dtype: str, exact_top_k: int | None, device: torch.device, runtime: str) -> Precision:
        """``dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``) settled for ``device``; the
        ONNX runtimes always run float32 (they export the float32 weights; int8 is ONNX Runtime's own)."""
        chosen = resolve_dtype(dtype, device)
        return cls(torch.float32 if runtime != "torch" else chosen, exact_top_k)

    @property
    def rescores(self) -> bool:
        """Whether any pair is scored again in float32: a reduced precision with ``exact_top_k`` set."""
        return self.exact_top_k is not None and self.dtype != torch.float32


class Float32Rescorer:
    """Scores again in float32 the pairs whose place in their ranking's top ``top_k`` the reduced precision
    could have got wrong.

    The error bound starts, for every ranking, from the same value: 1.5 × the largest difference between
    the two precisions on a fixed built-in sample of 64 pairs (scored once, on first need), and grows
    within that ranking to 1.5 × the largest difference seen among its rescored pairs. So a ranking's
    scores depend on its own pairs only, never on earlier calls or on other rankings scored in the same
    call.

    Args:
        top_k: the ``exact_top_k`` of :class:`Precision`.
        score: scores pairs with a model (``rerank.batch_scoring.BatchScorer.score``).
        load_float32: loads the float32 weights; called once, on first need.
        calibration_tokens: tokenizes the calibration sample; called once, on first need.
    """

    def __init__(self, top_k: int, score: ScoreFunction, load_float32: Callable[[], object],
                 calibration_tokens: Callable[[], TokenizedPairs]):
        self.top_k = top_k
        self._score = score
        self._load_float32 = load_float32
        self._calibration_tokens = calibration_tokens
        self._exact_model = None
        self._start_error_bound: float | None = None

    def rescore(self, reduced_model, rankings: list, tokens: TokenizedPairs, scores: np.ndarray) -> None:
        """Replace in ``scores`` (from ``reduced_model``) the ambiguous pairs' scores by float32 ones.
        ``rankings``: one label per pair; pairs with the same label form one ranking."""
        if self._exact_model is None:
            self._exact_model = self._load_float32()
        if self._start_error_bound is None:
            self._start_error_bound = self._calibrate_error_bound(reduced_model)
        groups: dict = {}
        for i, label in enumerate(rankings):
            groups.setdefault(label, []).append(i)
        groups = {label: np.array(rows) for label, rows in groups.items()}
        owner = np.empty(len(scores), dtype=np.int64)  # ranking number of each pair
        for number, rows in enumerate(groups.values()):
            owner[rows] = number
        bounds = np.full(len(groups), self._start_error_bound)
        reduced = scores.copy()
        rescored = np.zeros(len(scores), dtype=bool)
        while True:  # a larger bound can make more pairs ambiguous: repeat until none is left
            todo = np.setdiff1d(ambiguous_pairs(groups, reduced, self.top_k, bounds), np.flatnonzero(rescored))
            if len(todo) == 0:
                return
            self._score(self._exact_model, tokens, todo, scores)
            rescored[todo] = True
            seen = np.zeros(len(groups))
            np.maximum.at(seen, owner[todo], np.abs(scores[todo] - reduced[todo]).astype(np.float64))
            bounds = np.maximum(bounds, 1.5 * seen)
            logger.debug("rescored %d pairs in float32; largest ranking error bound now %.4g", len(todo), bounds.max())

    def _calibrate_error_bound(self, reduced_model) -> float:
        """1.5 × the largest |reduced - float32| score difference on the fixed calibration sample. The same
        model, precision and machine always give the same value."""
        tokens = self._calibration_tokens()
        reduced, exact = np.empty(len(tokens), np.float32), np.empty(len(tokens), np.float32)
        everything = np.arange(len(tokens))
        self._score(reduced_model, tokens, everything, reduced)
        self._score(self._exact_model, tokens, everything, exact)
        bound = 1.5 * float(np.abs(reduced - exact).max())
        logger.debug("start error bound %.4g (from %d calibration pairs)", bound, len(tokens))
        return bound


def calibration_pairs(tokenizer, max_length: int) -> list[tuple[str, str]]:
    """64 pairs of words drawn with a fixed seed from the tokenizer's vocabulary, spread over the lengths up
    to ``max_length``: the sample the reduced precision's starting error bound is measured on."""
    words = sorted(token for token in tokenizer.get_vocab() if token.isalpha() and token.isascii() and len(token) > 2)
    if not words:  # a vocabulary without plain words (byte-level BPE): its tokens as they are
        words = sorted(tokenizer.get_vocab())
    rng = np.random.default_rng(0)
    lengths = np.linspace(4, max(8, max_length - 16), num=64).astype(int)
    return [(" ".join(rng.choice(words, size=6)), " ".join(rng.choice(words, size=int(n)))) for n in lengths]


def ambiguous_pairs(groups: dict, scores: np.ndarray, top_k: int, error) -> np.ndarray:
    """Pairs whose rank among their ranking's best ``top_k`` could change if each score moved by up to the
    ranking's ``error`` (one number for all, or one per group, in the order of ``groups``): those that could
    be in the top k (within 2 × error of the k-th score) and have another pair of the same ranking within
    2 × error. Scoring exactly those again makes the top k exact: a pair further than 2 × error from every
    other keeps its order against all of them."""
    errors = np.broadcast_to(np.asarray(error, dtype=np.float64), (len(groups),))
    ambiguous = []
    for indices, reach in zip(groups.values(), 2 * errors):
        ranked = indices[np.argsort(-scores[indices], kind="stable")]
        values = scores[ranked]
        kth = values[min(top_k, len(values)) - 1]
        in_reach = values >= kth - reach
        gaps = values[:-1] - values[1:]
        close = np.zeros(len(values), dtype=bool)
        close[:-1] |= gaps <= reach
        close[1:] |= gaps <= reach
        ambiguous.append(ranked[in_reach & close])
    return np.concatenate(ambiguous) if ambiguous else np.zeros(0, dtype=np.int64)
