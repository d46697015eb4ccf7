"""int8 inference on CPU: PyTorch's dynamic quantization of the large Linear layers.

Weights are stored as int8 (per output channel); activations are quantized on the fly per call, and the matmul
runs in int8 (fbgemm / oneDNN kernels; VNNI where the CPU has it, AVX2 otherwise). Which layers:
  * int8: every nn.Linear of the ViT trunk (qkv, proj, MLP: ~75% of a full-size forward's time) and of the text
    encoder, and the feed-forward layers of the fusion encoder and the decoder;
  * fp32: attention itself (scaled-dot-product attention, and the projections of `common.MultiheadAttention`:
    their int8 error would land in every attention weight), convolutions (patch embedding, necks, pixel decoder), the heads that
    output boxes, scores and mask embeddings (small, and their errors land directly in the outputs), LayerNorms,
    and the whole tracker (small; its errors would accumulate through the memory over a video).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from conceptseg.model.common import MultiheadAttention

QUANTIZATIONS = ("int8",)


def int8_layers(model: nn.Module) -> set[str]:
    """Names of the Linear layers `quantize_int8` converts."""
    attention = {f"{name}.out_proj" for name, module in model.named_modules() if isinstance(module, MultiheadAttention)}
    names = set()
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or name in attention:
            continue
        in_trunk_or_text = name.startswith(("backbone.trunk.", "detector.text_encoder."))
        feed_forward = name.startswith(("detector.fusion_encoder.", "detector.decoder.layers.")) and \
            name.rsplit(".", 1)[-1] in ("linear1", "linear2")
        if in_trunk_or_text or feed_forward:
            names.add(name)
    return names


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace the layers of `int8_layers` by dynamically quantized int8 Linear layers, in place (CPU, fp32)."""
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ValueError(f"int8 quantization runs on CPU from float32 weights, not {parameter.device} {parameter.dtype}")
    with warnings.catch_warnings():
        # torch.ao.quantization and its quantized tensors are deprecated in favour of torchao (2.14 says so on every
        # call); they still run, and their fbgemm/oneDNN int8 kernels are what makes this path fast on CPU.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*deprecated")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {name: per_channel_dynamic_qconfig for name in int8_layers(model)}
        return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
