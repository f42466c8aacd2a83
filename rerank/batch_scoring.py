"""Scoring tokenized pairs in batches on a device: batches cut by a token budget, inputs staged for the
device, one forward pass per batch, the logits read back.

Pairs are sorted by token length and cut into batches bounded by a token budget
(``rerank.tokens.length_batches``), so short pairs travel in large batches and long ones in small batches,
with almost no padding. On CUDA, batches are built in pinned memory and copied without blocking.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from esrerank_errors import InputError

from .onnx_runtime import OnnxModel
from .tokens import MAX_BATCH_SIZE, TokenizedPairs, default_batch_tokens, length_batches


@dataclass(frozen=True)
class Batching:
    """How pairs are grouped for the model.

    max_batch_tokens: token budget of one batch (batch size × longest pair in it). Default None: 4,096 on
        CPU (the fastest budget measured on CPU: activations stay in cache; see the README) and 65,536 on
        GPU (large enough to keep the tensor cores busy).
    max_batch_size: most pairs in one batch, whatever their length. Default 256.
    tokenize_ahead: tokenize the pairs in chunks of ``tokenize_chunk``, the next chunk in a thread while the
        model scores this one. Default False: on CPU both share the same cores (5-8% slower on 2 cores); on
        an H100 the thread's Python work held the GIL while the main thread waited to launch kernels
        (32,000 pairs: 4,700 pairs/s with it, 6,400 without; README, batch rerank).
    tokenize_chunk: pairs per chunk with ``tokenize_ahead``. Default 2,048.
    """

    max_batch_tokens: int | None = None
    max_batch_size: int = MAX_BATCH_SIZE
    tokenize_ahead: bool = False
    tokenize_chunk: int = 2048

    def __post_init__(self):
        if self.tokenize_chunk < 1:
            raise InputError(f"tokenize_chunk must be at least 1, got {self.tokenize_chunk}")


class BatchScorer:
    """Runs a model over tokenized pairs, batch by batch, on ``device``.

    Args:
        device: where the model is.
        batching: the batch limits (:class:`Batching`); its token budget defaults by device type.
        pad_id: the tokenizer's padding token id.
        activation: applied to the logits (e.g. ``torch.sigmoid``); None returns them raw.
    """

    def __init__(self, device: torch.device, batching: Batching, pad_id: int,
                 activation: Callable[[torch.Tensor], torch.Tensor] | None):
        self.device = device
        self.max_batch_tokens = batching.max_batch_tokens or default_batch_tokens(device.type)
        self.max_batch_size = batching.max_batch_size
        self.pad_id = pad_id
        self.activation = activation
        self._pinned = threading.local()  # CUDA staging buffers, one set per calling thread

    def score(self, model, tokens: TokenizedPairs, indices: np.ndarray, scores: np.ndarray, progress=None) -> None:
        """Score the pairs ``indices`` of ``tokens`` with ``model`` into ``scores`` (indexed like
        ``tokens``), longest first."""
        with torch.inference_mode():
            for batch in self.batches(indices, tokens.lengths):
                inputs = tokens.padded(batch, int(tokens.lengths[batch[0]]), self.pad_id)
                scores[batch] = self._forward(model, inputs)
                if progress is not None:
                    progress.update(len(batch))

    def batches(self, indices: np.ndarray, lengths: np.ndarray) -> Iterator[np.ndarray]:
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
