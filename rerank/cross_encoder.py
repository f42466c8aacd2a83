"""A cross-encoder for reranking: one transformer pass over each (query, document) pair → one score.

It loads any ``AutoModelForSequenceClassification`` with one label (a hub id or a local folder) and scores
exactly as sentence-transformers' ``CrossEncoder.predict`` does with ``activation_fn=Identity()`` in
float32 (same tokenization, same ``longest_first`` truncation at ``max_length``), but faster:

- pairs are tokenized once, sorted by token length and cut into batches bounded by a token budget
  (``max_batch_tokens``), so short pairs travel in large batches and long ones in small batches, with
  almost no padding;
- on hardware with fast bf16 (GPUs, CPUs with AMX or AVX512-BF16) the weights run in bf16 by default,
  and the few pairs whose place in their query's top ``exact_top_k`` bf16 could get wrong (those with a
  neighbour closer than bf16's error) are scored again in float32, so the top of each ranking is float32's;
- on CUDA, batches are built in pinned memory and copied without blocking;
- long documents can be scored as overlapping windows, each document scored by its best window (MaxP,
  ``passages="maxp"``); a model trained by esrerank carries its ``max_length`` and passage handling in
  ``esrerank_reranker.json``, and is read back the same way unless told otherwise.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import DEFAULT_MODEL
from .device import detect_device, resolve_dtype
from .errors import ModelError
from .first_token import first_token_last_layer
from .onnx_runtime import RUNTIMES, OnnxModel
from .passages import PassageConfig, RerankerSettings, best_of_windows, window_pairs
from .tokens import MAX_BATCH_SIZE, TokenizedPairs, default_batch_tokens, length_batches, tokenize_pairs

logger = logging.getLogger(__name__)


def _check_sequence_classifier(model: str, trust_remote_code: bool):
    """Load the model's config and refuse anything that is not a one-label sequence classifier."""
    from transformers import AutoConfig

    local = Path(model).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelError(f"{local}: not a transformers model folder (no config.json)")
    if not local.exists() and (model.startswith(("/", "./", "../", "~")) or model.count("/") > 1):
        # a hub id is 'name' or 'owner/name': anything else was meant as a folder
        raise ModelError(f"{model}: no such model folder (nor a hub id, which is 'name' or 'owner/name')")
    try:
        config = AutoConfig.from_pretrained(str(local) if local.exists() else model,
                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model}: cannot load the model config ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0]})") from None
    architectures = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(
            f"{model}: is a {', '.join(architectures) or 'model with no architecture'}, not a sequence-"
            "classification model; a base encoder must be trained into a cross-encoder first "
            "(esrerank train --base-model ...)")
    if config.num_labels != 1:
        raise ModelError(f"{model}: has {config.num_labels} labels; a reranking cross-encoder has one")
    return config


class CrossEncoder:
    """Scores (query, document) pairs with a one-label sequence-classification transformer.

    Args:
        model: hub id or local folder. Default ``cross-encoder/ms-marco-MiniLM-L6-v2``.
        max_length: pairs longer than this many tokens are truncated, longest part first, as in
            sentence-transformers. Default ``None``: what the model was trained with when esrerank
            trained it (saved in ``esrerank_reranker.json``), else 512, the limit of BERT-style models.
            Scoring at another length than the training one costs effectiveness: a MiniLM trained at 256
            scored 0.617 nDCG@10 on SciFact test at 512 and 0.698 at 256.
        passages: how documents longer than a window are read: ``"first"`` (their start, truncated),
            ``"maxp"`` (overlapping windows, the best window's score is the document's), or a
            ``PassageConfig``. Default ``None``: the model's saved setting, else ``"first"``.
        device: ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``; ``None`` (default) picks the first available.
        dtype: ``"auto"`` (default) runs bf16 where the hardware does it fast (GPUs, CPUs with AMX or
            AVX512-BF16; fp16 on GPUs without bf16) and float32 elsewhere; ``"float32"`` forces full
            precision (scores equal sentence-transformers' to 1e-4); ``"bfloat16"``, ``"float16"``.
        activation: ``None`` (default) returns raw logits, which rank the same as probabilities and keep
            their resolution; ``"sigmoid"`` returns probabilities; or any callable on a float tensor.
        max_batch_tokens: token budget of one batch (batch size × longest pair in it). Default 4,096 on
            CPU (the fastest budget measured on CPU: activations stay in cache; see the README) and
            65,536 on GPU (large enough to keep the tensor cores busy).
        max_batch_size: most pairs in one batch, whatever their length. Default 256.
        show_progress: progress bar; ``None`` (default) shows it for more than 10,000 pairs.
        trust_remote_code: passed to transformers for models with custom code. Default False.
        exact_top_k: in bf16/fp16, pairs are grouped by query and every pair that could be among its
            query's best ``exact_top_k`` and has a neighbour within twice the reduced-precision error is
            scored again in float32 (from a float32 copy of the weights), so that the top ``exact_top_k`` of
            each query, order included, is the one float32 gives. Default 10 (what nDCG@10 and RR@10 read;
            its cost is measured in the README). ``None`` turns it off.
            The error bound starts, for every ranking, from the same value: 1.5 × the largest difference
            between the two precisions on a fixed built-in sample of 64 pairs (scored once, on first need),
            and grows within that ranking to 1.5 × the largest difference seen among its rescored pairs.
            So a ranking's scores depend on its own pairs only, never on earlier calls or on other rankings
            scored in the same call.
        runtime: ``"torch"`` (default); on CPU, ``"onnx"`` (ONNX Runtime, float32) or ``"onnx-int8"`` (int8
            dynamic quantization), from the ``onnx`` extra. Neither was faster than PyTorch on the CPUs
            measured (AMX, AVX2; README), and int8 changes rankings.
        tokenize_ahead: tokenize the pairs in chunks of ``tokenize_chunk`` (default 2,048), the next chunk in a
            thread while the model scores this one. ``None`` (default): off. On CPU both share the same
            cores (5-8% slower on 2 cores); on an H100 the thread's Python work held the GIL while the
            main thread waited to launch kernels (32,000 pairs: 4,700 pairs/s with it, 6,400 without;
            README, batch rerank).
        first_token_only: compute the last encoder layer for the first token only, the one the score reads
            (``rerank/first_token.py``): exact, and about a sixth less work for a 6-layer MiniLM (measured
            in the README). Default True; applies to BERT and RoBERTa/XLM-RoBERTa classifiers, any other
            model runs unchanged. False runs the unmodified model.
        compile: run the PyTorch model through ``torch.compile`` (dynamic shapes; the first batches of
            each new shape compile for seconds). Default False: it gained nothing on CPU (README); not yet
            measured on a GPU.
    """

    def __init__(self, model: str = DEFAULT_MODEL, max_length: int | None = None, device: str | None = None,
                 dtype: str = "auto", activation: str | Callable | None = None,
                 max_batch_tokens: int | None = None, max_batch_size: int = MAX_BATCH_SIZE,
                 show_progress: bool | None = None, trust_remote_code: bool = False,
                 exact_top_k: int | None = 10, runtime: str = "torch", compile: bool = False,
                 tokenize_ahead: bool | None = None, tokenize_chunk: int = 2048,
                 passages: str | PassageConfig | None = None, first_token_only: bool = True):
        from transformers import AutoTokenizer

        saved = RerankerSettings.load(model)
        if max_length is None:
            max_length = saved.max_length if saved else 512
        if passages is None:
            passages = saved.passages if saved else PassageConfig()
        elif isinstance(passages, str):
            passages = PassageConfig(mode=passages)
        self.passages = passages
        if passages.mode == "maxp":
            passages.window_tokens(max_length)  # refuses a max_length too short for windows, now
        if max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {max_length}")
        self.model_name = str(model)
        self.device = detect_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {list(RUNTIMES)}")
        if runtime != "torch":
            if self.device.type != "cpu":
                raise ValueError(f"runtime {runtime!r} runs on the CPU; use runtime='torch' on {self.device}")
            self.dtype = torch.float32  # exported from the float32 weights; int8 is ONNX Runtime's own
        self.runtime = runtime
        self.max_length = max_length
        self.activation = _resolve_activation(activation)
        self.max_batch_tokens = max_batch_tokens or default_batch_tokens(self.device.type)
        self.max_batch_size = max_batch_size
        self.show_progress = show_progress
        self.tokenize_ahead = False if tokenize_ahead is None else tokenize_ahead
        if tokenize_chunk < 1:
            raise ValueError(f"tokenize_chunk must be at least 1, got {tokenize_chunk}")
        self.tokenize_chunk = tokenize_chunk
        if exact_top_k is not None and exact_top_k < 1:
            raise ValueError(f"exact_top_k must be None or at least 1, got {exact_top_k}")
        self.exact_top_k = exact_top_k
        self._exact_model = None  # float32 weights, loaded on first need
        self._start_error_bound: float | None = None  # from the fixed calibration sample, on first need
        self._trust_remote_code = trust_remote_code
        self.first_token_only = first_token_only
        self._pinned = threading.local()  # CUDA staging buffers, one set per calling thread

        config = _check_sequence_classifier(self.model_name, trust_remote_code)
        source = str(Path(model).expanduser()) if Path(model).expanduser().exists() else self.model_name
        self._source, self._config = source, config
        self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        self.model = self._load_weights(self.dtype)
        if passages.mode == "maxp" and not self.tokenizer.is_fast:
            raise ModelError(f"{model}: passages='maxp' needs a fast tokenizer (token offsets); this one is not")
        self._uses_token_types = "token_type_ids" in self.tokenizer.model_input_names
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        if runtime != "torch":
            self.model = OnnxModel(self.model, ["input_ids", "attention_mask"]
                                   + (["token_type_ids"] if self._uses_token_types else []),
                                   quantize=runtime == "onnx-int8")
        if compile:
            if runtime != "torch":
                raise ValueError("compile applies to runtime='torch' only")
            self.model = torch.compile(self.model, dynamic=True)
        logger.info("loaded %s on %s in %s", self.model_name, self.device, self.dtype)

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
            raise ValueError(f"rankings has {len(rankings)} labels for {len(pairs)} pairs")
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        if self.passages.mode == "maxp":
            return self._predict_windows(pairs, rankings)
        return self._predict_pairs(pairs, rankings)

    def _predict_windows(self, pairs: list[tuple[str, str]], rankings: Sequence | None) -> np.ndarray:
        windows, owners = window_pairs(self.tokenizer, pairs, self.max_length, self.passages)
        labels = [rankings[i] for i in owners] if rankings is not None else None
        return best_of_windows(self._predict_pairs(windows, labels), owners, len(pairs))

    def _predict_pairs(self, pairs: list[tuple[str, str]], rankings: Sequence | None) -> np.ndarray:
        # Pairs are tokenized in chunks; with tokenize_ahead the next chunk is tokenized in a thread (the
        # fast tokenizers release the GIL) while the model scores this one.
        chunk = self.tokenize_chunk if self.tokenize_ahead else len(pairs)
        parts: list[TokenizedPairs] = []
        scores = np.empty(len(pairs), dtype=np.float32)
        show = self.show_progress if self.show_progress is not None else len(pairs) > 10_000
        with tqdm(total=len(pairs), desc="reranking", unit="pair", disable=not show) as progress, \
                self._tokenized_chunks(pairs, chunk) as chunks:
            start = 0
            for tokens in chunks:
                parts.append(tokens)
                self._score(self.model, tokens, np.arange(len(tokens)), scores[start:start + len(tokens)], progress)
                start += len(tokens)
        if self.exact_top_k is not None and self.dtype != torch.float32:
            labels = list(rankings) if rankings is not None else [q for q, _ in pairs]
            self._rescore_top_in_float32(labels, TokenizedPairs.concatenate(parts), scores)
        return scores

    @contextmanager
    def _tokenized_chunks(self, pairs: list[tuple[str, str]], chunk: int) -> Iterator[Iterator[TokenizedPairs]]:
        """The pairs tokenized ``chunk`` at a time; with tokenize_ahead the next chunk in a thread. Without
        it no thread is started: a service scoring small requests one at a time paid a thread per call."""
        if not self.tokenize_ahead:
            yield (self._tokenize(pairs[start:start + chunk]) for start in range(0, len(pairs), chunk))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as tokenizing:
            def ahead() -> Iterator[TokenizedPairs]:
                upcoming = tokenizing.submit(self._tokenize, pairs[:chunk])
                for start in range(0, len(pairs), chunk):
                    tokens = upcoming.result()
                    if start + chunk < len(pairs):
                        upcoming = tokenizing.submit(self._tokenize, pairs[start + chunk:start + 2 * chunk])
                    yield tokens
            yield ahead()

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

    # --- internals -----------------------------------------------------------------------------

    def _tokenize(self, pairs: list[tuple[str, str]]) -> TokenizedPairs:
        return tokenize_pairs(self.tokenizer, pairs, self.max_length, self._uses_token_types)

    def _load_weights(self, dtype: torch.dtype):
        from transformers import AutoModelForSequenceClassification

        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                self._source, config=self._config, dtype=dtype, trust_remote_code=self._trust_remote_code)
        model = model.to(self.device).eval()
        if self.first_token_only and not first_token_last_layer(model):
            logger.info("%s: no first-token-only last layer for model type %r; running it in full",
                        self.model_name, self._config.model_type)
        return model

    def _score(self, model, tokens: TokenizedPairs, indices: np.ndarray, scores: np.ndarray, progress=None) -> None:
        """Score the pairs ``indices`` of ``tokens`` with ``model`` into ``scores`` (indexed like
        ``tokens``), longest first."""
        with torch.inference_mode():
            for batch in self._batches(indices, tokens.lengths):
                inputs = tokens.padded(batch, int(tokens.lengths[batch[0]]), self._pad_id)
                scores[batch] = self._forward(model, inputs)
                if progress is not None:
                    progress.update(len(batch))

    def _rescore_top_in_float32(self, rankings: list, tokens: TokenizedPairs, scores: np.ndarray) -> None:
        """Score again in float32 the pairs whose place in their ranking's top ``exact_top_k`` the reduced
        precision could have got wrong. Each ranking learns its own error bound from its own rescored pairs,
        starting from the model's fixed calibration bound, so its scores do not depend on anything else."""
        if self._exact_model is None:
            self._exact_model = self._load_weights(torch.float32)
        if self._start_error_bound is None:
            self._start_error_bound = self._calibrate_error_bound()
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
            todo = np.setdiff1d(_ambiguous_pairs(groups, reduced, self.exact_top_k, bounds), np.flatnonzero(rescored))
            if len(todo) == 0:
                return
            self._score(self._exact_model, tokens, todo, scores)
            rescored[todo] = True
            seen = np.zeros(len(groups))
            np.maximum.at(seen, owner[todo], np.abs(scores[todo] - reduced[todo]).astype(np.float64))
            bounds = np.maximum(bounds, 1.5 * seen)
            logger.debug("rescored %d pairs in float32; largest ranking error bound now %.4g", len(todo), bounds.max())

    def _calibrate_error_bound(self) -> float:
        """1.5 × the largest |reduced - float32| score difference on a fixed sample: 64 pairs of words drawn
        with a fixed seed from the tokenizer's vocabulary, spread over the lengths up to ``max_length``. The
        same model, precision and machine always give the same value."""
        words = sorted(token for token in self.tokenizer.get_vocab()
                       if token.isalpha() and token.isascii() and len(token) > 2)
        if not words:  # a vocabulary without plain words (byte-level BPE): its tokens as they are
            words = sorted(self.tokenizer.get_vocab())
        rng = np.random.default_rng(0)
        lengths = np.linspace(4, max(8, self.max_length - 16), num=64).astype(int)
        pairs = [(" ".join(rng.choice(words, size=6)), " ".join(rng.choice(words, size=int(n)))) for n in lengths]
        tokens = self._tokenize(pairs)
        reduced, exact = np.empty(len(pairs), np.float32), np.empty(len(pairs), np.float32)
        everything = np.arange(len(pairs))
        self._score(self.model, tokens, everything, reduced)
        self._score(self._exact_model, tokens, everything, exact)
        bound = 1.5 * float(np.abs(reduced - exact).max())
        logger.debug("start error bound %.4g (from %d calibration pairs)", bound, len(pairs))
        return bound

    def _batches(self, indices: np.ndarray, lengths: np.ndarray):
        """Longest first, within the token budget, cut before short pairs on CPU (``length_batches``)."""
        return length_batches(indices, lengths, self.max_batch_tokens, self.max_batch_size,
                              cut_short=self.device.type == "cpu")

    def _forward(self, model, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if isinstance(model, OnnxModel):
            logits = torch.from_numpy(model(inputs))
        else:
            inputs = {name: self._to_device(name, array) for name, array in inputs.items()}
            logits = model(**inputs).logits[:, 0].float()
        if self.activation is not None:
            logits = self.activation(logits)
        return logits.cpu().numpy()

    def _to_device(self, name: str, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type != "cuda":
            return tensor.to(self.device)
        # A pinned staging buffer per input and thread, grown as needed, instead of pinning each batch:
        # pin_memory() allocates page-locked memory every call. (Its 0.9 s of 3.6 s in an H100 profile
        # was mostly waiting for the GIL held by the tokenizing thread, now off; see tokenize_ahead.)
        # Reusing it is safe: the previous batch's copy is complete once its logits came back (.cpu()).
        buffers = self._pinned.__dict__
        staging = buffers.get(name)
        if staging is None or staging.numel() < tensor.numel():
            staging = buffers[name] = torch.empty(max(tensor.numel(), self.max_batch_tokens), dtype=tensor.dtype,
                                                  pin_memory=True)
        view = staging[:tensor.numel()].view(tensor.shape)
        view.copy_(tensor)
        return view.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return (f"CrossEncoder({self.model_name!r}, max_length={self.max_length}, passages={self.passages.mode!r}, "
                f"device={str(self.device)!r}, dtype={str(self.dtype).removeprefix('torch.')!r}, "
                f"runtime={self.runtime!r})")


def _ambiguous_pairs(groups: dict, scores: np.ndarray, top_k: int, error) -> np.ndarray:
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


@contextmanager
def _quiet_transformers():
    """No per-weight loading bar: a model of this size loads in a blink."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _resolve_activation(activation):
    if activation is None or callable(activation):
        return activation
    if activation == "sigmoid":
        return torch.sigmoid
    if activation in ("none", "identity"):
        return None
    raise ValueError(f"unknown activation {activation!r}; use None, 'sigmoid' or a callable")


def _validate_pairs(pairs) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)):
        raise TypeError("predict takes a list of (query, document) pairs, not a string")
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, (str, bytes)) or len(pair) != 2:
            raise ValueError(f"pair {i} is not a (query, document) pair: {pair!r:.80}")
        query, doc = pair
        if not isinstance(query, str) or not isinstance(doc, str):
            raise ValueError(f"pair {i} must hold two strings, got ({type(query).__name__}, {type(doc).__name__})")
        checked.append((query, doc))
    return checked
