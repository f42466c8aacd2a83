"""The optional ONNX Runtime path for CPUs: the cross-encoder exported to ONNX, in float32 or with int8
dynamic quantization of its weight matrices.

Needs the ``onnx`` extra (``pip install 'esrerank[onnx]'``: onnxruntime, onnx). The model is exported
from its float32 PyTorch weights into a temporary folder owned by the ``OnnxModel`` (a few seconds for a
MiniLM), so there is no cache that could go stale. Measured (docs/reranking_speed.md): on a 2-core AMX CPU neither ONNX
path beat PyTorch in bf16 (int8 was 1.24x PyTorch float32 there); on a 2-core AVX2 CPU without VNNI, ONNX
Runtime int8 ran 0.93x its own float32 and both were slower than esrerank's PyTorch float32. int8 changes
rankings everywhere. So neither is a default; they stay as options for CPUs where they measure faster.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from esrerank_errors import ModelError

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "onnx-int8")


class OnnxModel:
    """A sequence classifier run by ONNX Runtime on the CPU: ``model(inputs)`` → logits (batch,).

    Args:
        torch_model: the float32 PyTorch model to export (eval mode).
        input_names: the tokenizer outputs the model takes, e.g. input_ids, attention_mask, token_type_ids.
        quantize: int8 dynamic quantization of the weight matrices, per output channel (per-tensor scales
            moved a trained MiniLM's scores by up to 2.9, per-channel by up to 1.4); activations are
            quantized on the fly; products of two activations, as in attention, stay float32. Default False.
        num_threads: ONNX Runtime's intra-op threads; ``None`` uses torch's thread count.
    """

    def __init__(self, torch_model, input_names: list[str], quantize: bool = False, num_threads: int | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise ModelError("the ONNX runtime path needs the onnx extra: pip install 'esrerank[onnx]'") from None
        import torch

        self._folder = tempfile.TemporaryDirectory(prefix="esrerank-onnx-")
        path = Path(self._folder.name) / "model.onnx"
        self.input_names = list(input_names)
        dummy = tuple(torch.ones((2, 8), dtype=torch.long) for _ in self.input_names)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shape-dependent branches: fixed per call
            # The TorchScript exporter handles transformers' BERT with dynamic batch and length axes in a
            # second or two; the dynamo exporter took far longer for the same graph.
            torch.onnx.export(torch_model, dummy, str(path), input_names=self.input_names, output_names=["logits"],
                              dynamic_axes={**{n: {0: "batch", 1: "length"} for n in self.input_names},
                                            "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = path.with_name("model.int8.onnx")
            quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"MatMulConstBOnly": True})
            path = quantized
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = num_threads or torch.get_num_threads()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        logger.info("ONNX Runtime %s model ready (%s)", "int8" if quantize else "float32", path.name)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["logits"], {name: inputs[name] for name in self.input_names})[0][:, 0]
