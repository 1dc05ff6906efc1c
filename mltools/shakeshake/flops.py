"""Analytic FLOPs of Shake-Shake-2xKd per 32×32 image (2 FLOPs per multiply-add).

Counts convolutions and the final linear layer, as torch's FlopCounterMode
does; BatchNorm, ReLU, pooling and the mix are not counted. Training =
3 × forward − the stem's input-gradient convolution (the image needs no
gradient). The same architecture FLOPs serve both implementations: torch
2.13's FlopCounterMode over-counts grouped-convolution backward, which would
inflate the fast model's MFU by ~18%.
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGE_SIZE = 32
STEM_WIDTH = 16
NUM_CLASSES = 10


@dataclass(frozen=True)
class FlopCount:
    forward: int            # per image
    train: int              # forward + backward per image


def _conv(cin: int, cout: int, k: int, hw_out: int) -> int:
    return 2 * cout * cin * k * k * hw_out * hw_out


def shakeshake_flops(depth: int = 26, width: int = 32) -> FlopCount:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1, got {depth}")
    n = (depth - 2) // 6
    hw = IMAGE_SIZE
    stem = _conv(3, STEM_WIDTH, 3, hw)
    total = stem
    cin = STEM_WIDTH
    for stage, mult in enumerate((1, 2, 4)):
        cout = width * mult
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            hw_out = hw // stride
            total += 2 * (_conv(cin, cout, 3, hw_out) + _conv(cout, cout, 3, hw_out))   # 2 branches
            if cin != cout:
                total += _conv(cin, cout // 2, 1, hw_out) + _conv(cin, cout - cout // 2, 1, hw_out)
            cin, hw = cout, hw_out
    total += 2 * cin * NUM_CLASSES
    # The stem's input gradient (grad wrt the image) is never computed.
    return FlopCount(forward=total, train=3 * total - stem)
