"""Loading a cross-encoder: its config checked, its tokenizer, and its weights in the runtime that runs them.

A model is a hub id or a local folder holding an ``AutoModelForSequenceClassification`` with one label.
Anything else (a base encoder with no head, a classifier with several labels, a folder that is not a
model) is refused here, before any weights are read, with a message saying what the model is instead.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from esrerank_errors import InputError, ModelError

from .first_token import first_token_last_layer
from .onnx_runtime import RUNTIMES, OnnxModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What runs the weights.

    name: ``"torch"`` (default); on CPU, ``"onnx"`` (ONNX Runtime, float32) or ``"onnx-int8"`` (int8
        dynamic quantization), from the ``onnx`` extra. Neither was faster than PyTorch on the CPUs
        measured (AMX, AVX2; README), and int8 changes rankings.
    first_token_only: compute the last encoder layer for the first token only, the one the score reads
        (``rerank/first_token.py``): exact, and about a sixth less work for a 6-layer MiniLM (measured in
        the README). Default True; applies to BERT and RoBERTa/XLM-RoBERTa classifiers, any other model
        runs unchanged. False runs the unmodified model.
    compile: run the PyTorch model through ``torch.compile`` (dynamic shapes; the first batches of each new
        shape compile for seconds). Default False: it gained nothing on CPU (README); not yet measured on
        a GPU. Applies to ``name="torch"`` only.
    """

    name: str = "torch"
    first_token_only: bool = True
    compile: bool = False

    def __post_init__(self):
        if self.name not in RUNTIMES:
            raise InputError(f"unknown runtime {self.name!r}; choose one of {list(RUNTIMES)}")
        if self.compile and self.name != "torch":
            raise InputError("compile applies to runtime='torch' only")


@dataclass(frozen=True)
class ModelFiles:
    """A checked one-label sequence classifier: ``name`` as the user gave it, ``source`` what transformers
    loads (the expanded local folder, or the hub id), its ``config``. Open one with :meth:`open`."""

    name: str
    source: str
    config: Any  # transformers' PretrainedConfig
    trust_remote_code: bool = False

    @classmethod
    def open(cls, model: str, trust_remote_code: bool = False) -> ModelFiles:
        local = Path(model).expanduser()
        config = _check_sequence_classifier(str(model), trust_remote_code)
        return cls(str(model), str(local) if local.exists() else str(model), config, trust_remote_code)

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.source, trust_remote_code=self.trust_remote_code)

    def load_weights(self, dtype: torch.dtype, device: torch.device, first_token_only: bool) -> torch.nn.Module:
        """The PyTorch model in ``dtype`` on ``device``, in eval mode; with ``first_token_only``, its last
        layer cut to the first token where the architecture allows it."""
        from transformers import AutoModelForSequenceClassification

        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                self.source, config=self.config, dtype=dtype, trust_remote_code=self.trust_remote_code)
        model = model.to(device).eval()
        if first_token_only and not first_token_last_layer(model):
            logger.info("%s: no first-token-only last layer for model type %r; running it in full",
                        self.name, self.config.model_type)
        return model

    def load_for(self, runtime: Runtime, dtype: torch.dtype, device: torch.device, input_names: list[str]):
        """The weights as ``runtime`` runs them: the PyTorch model, exported to ONNX Runtime (from its
        float32 weights), or compiled by ``torch.compile``."""
        model = self.load_weights(dtype, device, runtime.first_token_only)
        if runtime.name != "torch":
            model = OnnxModel(model, input_names, quantize=runtime.name == "onnx-int8")
        if runtime.compile:
            model = torch.compile(model, dynamic=True)
        return model


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
