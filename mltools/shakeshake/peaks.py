"""Dense peak TFLOP/s of known GPUs, per precision, for MFU.

Dense = the datasheet "with sparsity" figure / 2; FP16/BF16 with FP32
accumulation (what cuDNN/cuBLAS use under autocast). Sources: NVIDIA A100,
H100 (SXM5, PCIe), H200, L4 datasheets; Ada whitepaper for the RTX 4090.
Override with ``--peak-tflops`` for anything else (or other clocks).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

PRECISIONS = ("bf16", "fp16", "tf32", "fp32")

# name patterns (lower case, checked in order: specific first) → peaks
_PEAKS: Tuple[Tuple[Tuple[str, ...], Dict[str, float]], ...] = (
    (("h200",), {"bf16": 989.0, "fp16": 989.0, "tf32": 494.5, "fp32": 67.0}),
    (("h100", "pcie"), {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    (("h100",), {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (("a100",), {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (("l4",), {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (("rtx 4090",), {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6}),
)


def peak_tflops(device_name: Optional[str], precision: str) -> Optional[float]:
    """The table's dense peak for ``device_name`` at ``precision``, or None if unknown.

    NVL variants of the H100/H200 run at other clocks and are not in the table.
    """
    if not device_name or precision not in PRECISIONS:
        return None
    name = device_name.lower()
    if "nvl" in name:
        return None
    for patterns, peaks in _PEAKS:
        if all(p in name for p in patterns):
            if patterns == ("l4",) and "l40" in name:
                continue
            return peaks[precision]
    return None
