"""Dense peak TFLOP/s of known GPUs, per precision, for MFU, each with where it comes from.

Dense = the datasheet "with sparsity" figure / 2; FP16/BF16 with FP32
accumulation (what cuDNN/cuBLAS use under autocast); FP32 is the non-tensor
figure. MFU names the peak it used (:class:`Peak`: the GPU model, the
precision, the figure and its source), so a reader can check it or replace
it: ``--peak-tflops`` overrides the table (other clocks, GPUs not listed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

PRECISIONS = ("bf16", "fp16", "tf32", "fp32")


@dataclass(frozen=True)
class Peak:
    tflops: float
    precision: str
    gpu: str            # the table's model, e.g. "H100 SXM5"
    source: str         # where the figure comes from


# name patterns (lower case, all must match; specific first) -> (model, peaks, source)
_PEAKS: Tuple[Tuple[Tuple[str, ...], str, Dict[str, float], str], ...] = (
    (("h200",), "H200 SXM", {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0},
     "NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16/FP16 1,979 and TF32 989 TFLOPS with sparsity, "
     "halved; FP32 67"),
    (("h100", "pcie"), "H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
     "NVIDIA H100 Tensor Core GPU datasheet (PCIe): BF16/FP16 1,513 and TF32 756 TFLOPS with sparsity, "
     "halved; FP32 51"),
    (("h100",), "H100 SXM5", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9},
     "NVIDIA H100 Tensor Core GPU Architecture whitepaper (H100 SXM5): dense BF16/FP16 989.4, "
     "TF32 494.7, FP32 66.9 TFLOPS"),
    (("a100",), "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
     "NVIDIA A100 Tensor Core GPU datasheet: BF16/FP16 312, TF32 156 (dense), FP32 19.5 TFLOPS"),
    (("l4",), "L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
     "NVIDIA L4 Tensor Core GPU datasheet: BF16/FP16 242 and TF32 120 TFLOPS with sparsity, halved; FP32 30.3"),
    (("rtx 4090",), "GeForce RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
     "NVIDIA Ada Lovelace GPU Architecture whitepaper (RTX 4090): FP16/BF16 tensor with FP32 accumulate "
     "165.2, TF32 82.6, FP32 82.6 TFLOPS (dense)"),
)


def find_peak(device_name: Optional[str], precision: str) -> Optional[Peak]:
    """The table's dense peak for ``device_name`` at ``precision``, or None if unknown.

    NVL variants of the H100/H200 run at other clocks and are not in the table.
    """
    if not device_name or precision not in PRECISIONS:
        return None
    name = device_name.lower()
    if "nvl" in name:
        return None
    for patterns, model, peaks, source in _PEAKS:
        if all(p in name for p in patterns):
            if patterns == ("l4",) and "l40" in name:
                continue
            return Peak(peaks[precision], precision, model, source)
    return None


def given_peak(tflops: float, precision: str) -> Peak:
    """The peak the user gave with ``--peak-tflops``."""
    return Peak(tflops, precision, "as given", "--peak-tflops")

