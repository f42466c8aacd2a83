"""A cross-encoder for reranking: one transformer pass over each (query, document) pair → one score.

It loads any ``AutoModelForSequenceClassification`` with one label (a hub id or a local folder) and scores
exactly as sentence-transformers' ``CrossEncoder.predict`` does with ``activation_fn=Identity()`` in
float32 (same tokenization, same ``longest_first`` truncation at ``max_length``), but faster:

- pairs are tokenized once, sorted by token length and cut into batches bounded by a token budget, so
  short pairs travel in large batches and long ones in small batches, with almost no padding; on CUDA,
  batches are built in pinned memory and copied without blocking (``rerank.batch_scoring``);
- on hardware with fast bf16 (GPUs, CPUs with AMX or AVX512-BF16) the weights run in bf16 by default,
  and the few pairs whose place in their query's top ``exact_top_k`` bf16 could get wrong (those with a
  neighbour closer than bf16's error) are scored again in float32, so the top of each ranking is float32's
  (``rerank.precision``);
- long documents can be scored as overlapping windows, each document scored by its best window (MaxP,
  ``passages="maxp"``; ``rerank.passages``); a model trained by esrerank carries its ``max_length`` and
  passage handling in ``esrerank_reranker.json``, and is read back the same way unless told otherwise.

Loading and checking the model is ``rerank.model_loading``'s job; this module puts the parts together
behind sentence-transformers' interface: ``predict(pairs)`` and ``rank(query, documents)``.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from esrerank_errors import InputError, ModelError

from . import DEFAULT_MODEL
from .batch_scoring import Batching, BatchScorer
from .device import detect_device
from .model_loading import ModelFiles, Runtime
from .passages import PassageConfig, RerankerSettings, best_of_windows, window_pairs
from .precision import Float32Rescorer, Precision, calibration_pairs
from .tokens import TokenizedPairs, tokenize_pairs, tokenized_chunks

logger = logging.getLogger(__name__)


class CrossEncoder:
    """Scores (query, document) pairs with a one-label sequence-classification transformer.

    Args:
        model: hub id or local folder. Default ``cross-encoder/ms-marco-MiniLM-L6-v2``, a small reranker
            trained on MS MARCO that runs well on a CPU.
        max_length: pairs longer than this many tokens are truncated, longest part first, as in
            sentence-transformers. Default ``None``: what the model was trained with when esrerank
            trained it (saved in ``esrerank_reranker.json``), else 512, the limit of BERT-style models.
            Scoring at another length than the training one costs effectiveness: a MiniLM trained at 256
            scored 0.617 nDCG@10 on SciFact test at 512 and 0.698 at 256.
        device: ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``. Default ``None``: the first available of
            these, so a GPU is used where there is one.
        dtype: ``"auto"`` (default) runs bf16 where the hardware does it fast (GPUs, CPUs with AMX or
            AVX512-BF16; fp16 on GPUs without bf16) and float32 elsewhere, since bf16 with
            ``exact_top_k`` keeps float32's rankings at up to 2.3x its speed (README); ``"float32"``
            forces full precision (scores equal sentence-transformers' to 1e-4); ``"bfloat16"``,
            ``"float16"``.
        activation: ``None`` (default) returns raw logits, which rank the same as probabilities and keep
            their resolution; ``"sigmoid"`` returns probabilities; or any callable on a float tensor.
        passages: how documents longer than a window are read: ``"first"`` (their start, truncated),
            ``"maxp"`` (overlapping windows, the best window's score is the document's), or a
            ``PassageConfig``. Default ``None``: the model's saved setting (the way it was trained), else
            ``"first"``.
        exact_top_k: in bf16/fp16, pairs are grouped by ranking and every pair that could be among its
            ranking's best ``exact_top_k`` and has a neighbour within twice the reduced-precision error is
            scored again in float32 (from a float32 copy of the weights), so that the top ``exact_top_k``
            of each ranking, order included, is the one float32 gives (``rerank.precision``). Default 10:
            what nDCG@10 and RR@10 read (its cost is measured in the README). ``None`` turns it off.
        runtime: what runs the weights: ``"torch"`` (default), ``"onnx"`` or ``"onnx-int8"`` (CPU only), or
            a ``rerank.model_loading.Runtime`` that also sets ``first_token_only`` (default True: exact
            and a sixth less work) and ``compile`` (default False: it gained nothing on CPU).
        batching: the batch limits and tokenizing ahead, a ``rerank.batch_scoring.Batching``. Default
            ``None``: ``Batching()``, a token budget of 4,096 on CPU and 65,536 on GPU (the fastest
            measured), at most 256 pairs a batch, no tokenizing thread.
        show_progress: progress bar. Default ``None``: shown for more than 10,000 pairs, where a call takes
            long enough to want one.
        trust_remote_code: passed to transformers for models with custom code. Default False: such code
            runs on this machine, so it must be asked for.

    Example::

        model = CrossEncoder("cross-encoder/ms-marco-MiniLM-L6-v2")
        model.predict([("what is bm25", "BM25 is a ranking function"), ("what is bm25", "bananas")])
        model.rank("what is bm25", ["bananas", "BM25 is a ranking function"], top_k=1)
    """

    def __init__(self, model: str = DEFAULT_MODEL, max_length: int | None = None, device: str | None = None,
                 dtype: str = "auto", activation: str | Callable | None = None, *,
                 passages: str | PassageConfig | None = None, exact_top_k: int | None = 10,
                 runtime: str | Runtime = "torch", batching: Batching | None = None,
                 show_progress: bool | None = None, trust_remote_code: bool = False):
        saved = RerankerSettings.load(model)
        if max_length is None:
            max_length = saved.max_length if saved else 512
        if passages is None:
            passages = saved.passages if saved else PassageConfig()
        elif isinstance(passages, str):
            passages = PassageConfig(mode=passages)
        if passages.mode == "maxp":
            passages.window_tokens(max_length)  # refuses a max_length too short for windows, now
        if max_length < 8:
            raise InputError(f"max_length must be at least 8, got {max_length}")
        self.model_name = str(model)
        self.max_length = max_length
        self.passages = passages
        self.device = detect_device(device)
        self.runtime = Runtime(runtime) if isinstance(runtime, str) else runtime
        if self.runtime.name != "torch" and self.device.type != "cpu":
            raise InputError(f"runtime {self.runtime.name!r} runs on the CPU; use runtime='torch' on {self.device}")
        self.precision = Precision.choose(dtype, exact_top_k, self.device, self.runtime.name)
        self.activation = _resolve_activation(activation)
        self.batching = batching or Batching()
        self.show_progress = show_progress

        files = ModelFiles.open(self.model_name, trust_remote_code)
        self.tokenizer = files.load_tokenizer()
        if passages.mode == "maxp" and not self.tokenizer.is_fast:
            raise ModelError(f"{model}: passages='maxp' needs a fast tokenizer (token offsets); this one is not")
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if self._uses_token_types else [])
        self.model = files.load_for(self.runtime, self.dtype, self.device, input_names)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.scorer = BatchScorer(self.device, self.batching, pad_id, self.activation)
        self._rescorer = None
        if self.precision.rescores:
            self._rescorer = Float32Rescorer(
                self.precision.exact_top_k, self.scorer.score,
                load_float32=lambda: files.load_weights(torch.float32, self.device, self.runtime.first_token_only),
                calibration_tokens=lambda: self._tokenize(calibration_pairs(self.tokenizer, self.max_length)))
        logger.info("loaded %s on %s in %s", self.model_name, self.device, self.dtype)

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype the model runs in (``dtype="auto"`` settled for the device)."""
        return self.precision.dtype

    # --- scoring -------------------------------------------------------------------------------

    def predict(self, pairs: Sequence[Sequence[str]], rankings: Sequence | None = None) -> np.ndarray:
        """Score each (query, document) pair; returns a float32 array in input order.

        ``rankings``: for ``exact_top_k``, which ranking each pair belongs to (any hashable label per
        pair); default: pairs with the same query text form one ranking. With ``passages="maxp"`` each
        pair is scored as its document's windows and gets its best window's score; the float32 rescoring
        then makes the order of the best ``exact_top_k`` *windows* of each ranking exact.

        Returns:
            A float32 array, one score per pair (raw logits unless ``activation`` says otherwise).

        Example::

            model = CrossEncoder("cross-encoder/ms-marco-MiniLM-L6-v2")
            model.predict([("what is bm25", "BM25 is a ranking function"), ("what is bm25", "bananas")])
        """
        pairs = _validate_pairs(pairs)
        if rankings is not None and len(rankings) != len(pairs):
            raise InputError(f"rankings has {len(rankings)} labels for {len(pairs)} pairs")
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if self.passages.mode == "maxp":
            return self._predict_windows(pairs, rankings)
        return self._predict_pairs(pairs, rankings)

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None,
             return_documents: bool = False) -> list[dict]:
        """Score ``documents`` against ``query`` and return them best first, as sentence-transformers'
        ``CrossEncoder.rank`` does.

        Returns:
            ``[{"corpus_id": index into documents, "score": float[, "text": str]}, ...]``, the best
            ``top_k`` (default all).

        Example::

            model.rank("what is bm25", ["bananas", "BM25 is a ranking function"], top_k=1)
            # [{'corpus_id': 1, 'score': ...}]
        """
        if isinstance(documents, str):
            raise TypeError("documents must be a list of strings, not one string")
        scores = self.predict([(query, doc) for doc in documents])
        order = np.argsort(-scores, kind="stable")[:top_k]
        ranked = [{"corpus_id": int(i), "score": float(scores[i])} for i in order]
        if return_documents:
            for entry in ranked:
                entry["text"] = documents[entry["corpus_id"]]
        return ranked

    def _predict_windows(self, pairs: list[tuple[str, str]], rankings: Sequence | None) -> np.ndarray:
        windows, owners = window_pairs(self.tokenizer, pairs, self.max_length, self.passages)
        labels = [rankings[i] for i in owners] if rankings is not None else None
        return best_of_windows(self._predict_pairs(windows, labels), owners, len(pairs))

    def _predict_pairs(self, pairs: list[tuple[str, str]], rankings: Sequence | None) -> np.ndarray:
        ahead = self.batching.tokenize_ahead
        chunk = self.batching.tokenize_chunk if ahead else len(pairs)
        parts: list[TokenizedPairs] = []
        scores = np.empty(len(pairs), dtype=np.float32)
        show = self.show_progress if self.show_progress is not None else len(pairs) > 10_000
        with tqdm(total=len(pairs), desc="reranking", unit="pair", disable=not show) as progress, \
                tokenized_chunks(self._tokenize, pairs, chunk, ahead) as chunks:
            start = 0
            for tokens in chunks:
                parts.append(tokens)
                self.scorer.score(self.model, tokens, np.arange(len(tokens)), scores[start:start + len(tokens)],
                                  progress)
                start += len(tokens)
        if self._rescorer is not None:
            labels = list(rankings) if rankings is not None else [q for q, _ in pairs]
            self._rescorer.rescore(self.model, labels, TokenizedPairs.concatenate(parts), scores)
        return scores

    def _tokenize(self, pairs: list[tuple[str, str]]) -> TokenizedPairs:
        return tokenize_pairs(self.tokenizer, pairs, self.max_length, self._uses_token_types)

    def __repr__(self) -> str:
        return (f"CrossEncoder({self.model_name!r}, max_length={self.max_length}, passages={self.passages.mode!r}, "
                f"device={str(self.device)!r}, dtype={str(self.dtype).removeprefix('torch.')!r}, "
                f"runtime={self.runtime.name!r})")


def _resolve_activation(activation):
    if activation is None or callable(activation):
        return activation
    if activation == "sigmoid":
        return torch.sigmoid
    if activation in ("none", "identity"):
        return None
    raise InputError(f"unknown activation {activation!r}; use None, 'sigmoid' or a callable")


def _validate_pairs(pairs) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)):
        raise TypeError("predict takes a list of (query, document) pairs, not a string")
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise InputError(f"pair {i} is not a (query, document) pair: {pair!r:.80}")
        query, doc = pair
        if not isinstance(query, str) or not isinstance(doc, str):
            raise InputError(f"pair {i} must hold two strings, got ({type(query).__name__}, {type(doc).__name__})")
        checked.append((query, doc))
    return checked
