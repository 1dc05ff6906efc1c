"""Shake-Shake-26 2xKd as the official code defines it, in two implementations.

Architecture (xgastaldi/shake-shake ``models/shakeshake.lua``): a 3×3 stem
convolution 3→16 without bias and its BatchNorm (no ReLU); three stages of
n = (depth−2)/6 blocks with widths K, 2K, 4K (the first block of stage 1 at
stride 1, of stages 2 and 3 at stride 2); each block has two branches
ReLU→Conv3×3→BN→ReLU→Conv3×3→BN mixed by the shake function, plus a shortcut
that is the identity, or where the width changes ReLU→[1×1 conv of the
(sub-sampled) input ; 1×1 conv of the input shifted one pixel right and down]
→concat→BN; head ReLU→global 8×8 average→Linear(4K→10) with bias.

- ``ReferenceShakeShake``: two branch modules per block, the custom autograd
  mix, as users write it.
- ``FastShakeShake``: the two first convolutions as one convolution with 2·K
  outputs (the input is read once), the two second convolutions as one
  grouped convolution (or two convolutions on the channel halves:
  ``second_conv="split"``), one BatchNorm over the concatenated channels, and
  a traceable mix that torch.compile fuses with the BatchNorm around it.

Their weights map one-to-one: fast tensors are the reference branch tensors
concatenated along dim 0 (``fast_state_from_reference`` and back).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

from mltools.shakeshake import require_torch

torch = require_torch()   # MissingDependencyError with the install hint, not ModuleNotFoundError

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from mltools.shakeshake.shake import (SHAKE_LEVELS, CoefficientSource, coefficients_for,
                                      shake_mix, shake_mix_traceable)

IMPLEMENTATIONS = ("reference", "fast")
SECOND_CONV_MODES = ("grouped", "split")
STEM_WIDTH = 16
NUM_CLASSES = 10


def blocks_per_stage(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 26, ...), got {depth}")
    return (depth - 2) // 6


def stage_plan(depth: int, width: int):
    """(in_channels, out_channels, stride) of every block, in order."""
    n = blocks_per_stage(depth)
    plan, cin = [], STEM_WIDTH
    for stage, mult in enumerate((1, 2, 4)):
        cout = width * mult
        for i in range(n):
            plan.append((cin, cout, 2 if (stage > 0 and i == 0) else 1))
            cin = cout
    return plan


def _conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, groups=groups)


class Shortcut(nn.Module):
    """ReLU → [1×1 conv of x[::s, ::s] ; 1×1 conv of the one-pixel-shifted x[::s, ::s]] → concat → BN."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        s = self.stride
        # Lua SpatialZeroPadding(1,-1,1,-1): shift right and down, zero row/column 0.
        shifted = F.pad(x, (1, -1, 1, -1))
        p1 = self.conv1(x[:, :, ::s, ::s] if s > 1 else x)
        p2 = self.conv2(shifted[:, :, ::s, ::s] if s > 1 else shifted)
        return self.bn(torch.cat((p1, p2), dim=1))


class Branch(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(F.relu(x)))
        return self.bn2(self.conv2(F.relu(x)))


class ReferenceBlock(nn.Module):
    def __init__(self, index: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.index = index
        self.branch1 = Branch(cin, cout, stride)
        self.branch2 = Branch(cin, cout, stride)
        self.shortcut = Shortcut(cin, cout, stride) if cin != cout else None

    def forward(self, x, level: str, source: Optional[CoefficientSource]):
        h1, h2 = self.branch1(x), self.branch2(x)
        if self.training:
            alpha, beta = coefficients_for(self.index, x.shape[0], h1, level, source)
            mixed = shake_mix(h1, h2, alpha, beta)
        else:
            mixed = 0.5 * h1 + 0.5 * h2
        return mixed + (x if self.shortcut is None else self.shortcut(x))


class FastBlock(nn.Module):
    def __init__(self, index: int, cin: int, cout: int, stride: int, second_conv: str = "grouped"):
        super().__init__()
        if second_conv not in SECOND_CONV_MODES:
            raise ValueError(f"second_conv must be one of {SECOND_CONV_MODES}")
        self.index = index
        self.cout = cout
        self.second_conv = second_conv
        self.conv1 = _conv3x3(cin, 2 * cout, stride)          # both branches' first convs
        self.bn1 = nn.BatchNorm2d(2 * cout)
        self.conv2 = _conv3x3(2 * cout, 2 * cout, groups=2)   # both second convs, grouped
        self.bn2 = nn.BatchNorm2d(2 * cout)
        self.shortcut = Shortcut(cin, cout, stride) if cin != cout else None
        for conv in (self.conv1, self.conv2):   # initialise as the per-branch convs
            conv.branch_out_channels = cout

    def forward(self, x, level: str, source: Optional[CoefficientSource]):
        y = F.relu(self.bn1(self.conv1(F.relu(x))))
        if self.second_conv == "grouped":
            y = self.conv2(y)
        else:   # two plain convolutions: sometimes faster than grouped ones in cuDNN
            c, w = self.cout, self.conv2.weight
            y = torch.cat((F.conv2d(y[:, :c], w[:c], padding=1),
                           F.conv2d(y[:, c:], w[c:], padding=1)), dim=1)
        y = self.bn2(y)
        h1, h2 = y[:, :self.cout], y[:, self.cout:]
        if self.training:
            alpha, beta = coefficients_for(self.index, x.shape[0], h1, level, source)
            mixed = shake_mix_traceable(h1, h2, alpha, beta)
        else:
            mixed = 0.5 * h1 + 0.5 * h2
        return mixed + (x if self.shortcut is None else self.shortcut(x))


class _ShakeShakeBase(nn.Module):
    impl = ""

    def __init__(self, depth: int, width: int, shake_level: str, blocks: List[nn.Module]):
        super().__init__()
        if shake_level not in SHAKE_LEVELS:
            raise ValueError(f"shake level must be one of {SHAKE_LEVELS}")
        self.depth, self.width, self.shake_level = depth, width, shake_level
        # None: α/β drawn on the device each step; tests and DDP checks inject them.
        self.coefficient_source: Optional[CoefficientSource] = None
        self.stem_conv = _conv3x3(3, STEM_WIDTH)
        self.stem_bn = nn.BatchNorm2d(STEM_WIDTH)
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(4 * width, NUM_CLASSES)
        self._init_weights()

    def _init_weights(self) -> None:
        # Official ConvInit/BNInit: N(0, sqrt(2/(k·k·Cout))) per branch conv, BN 1/0, FC bias 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                cout = getattr(m, "branch_out_channels", m.out_channels)
                m.weight.data.normal_(0.0, math.sqrt(2.0 / (kh * kw * cout)))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1.0)
                m.bias.data.zero_()
        self.fc.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_bn(self.stem_conv(x))
        for block in self.blocks:
            x = block(x, self.shake_level, self.coefficient_source)
        x = F.relu(x).mean(dim=(2, 3))
        return self.fc(x)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)


class ReferenceShakeShake(_ShakeShakeBase):
    impl = "reference"

    def __init__(self, depth: int = 26, width: int = 32, shake_level: str = "image"):
        blocks = [ReferenceBlock(i, *p) for i, p in enumerate(stage_plan(depth, width))]
        super().__init__(depth, width, shake_level, blocks)


class FastShakeShake(_ShakeShakeBase):
    impl = "fast"

    def __init__(self, depth: int = 26, width: int = 32, shake_level: str = "image",
                 second_conv: str = "grouped"):
        blocks = [FastBlock(i, *p, second_conv=second_conv)
                  for i, p in enumerate(stage_plan(depth, width))]
        super().__init__(depth, width, shake_level, blocks)


def build_model(impl: str, depth: int = 26, width: int = 32, shake_level: str = "image",
                second_conv: str = "grouped") -> _ShakeShakeBase:
    if impl == "reference":
        return ReferenceShakeShake(depth, width, shake_level)
    if impl == "fast":
        return FastShakeShake(depth, width, shake_level, second_conv)
    raise ValueError(f"impl must be one of {IMPLEMENTATIONS}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


_BRANCH_KEYS = ("conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                "conv2.weight", "bn2.weight", "bn2.bias", "bn2.running_mean", "bn2.running_var")


def fast_state_from_reference(ref_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map a reference state dict to the fast one: branch tensors concatenated on dim 0."""
    out: Dict[str, torch.Tensor] = {}
    for key, value in ref_state.items():
        if ".branch1." in key or ".branch2." in key:
            continue
        out[key] = value.clone()
    blocks = sorted({int(k.split(".")[1]) for k in ref_state if k.startswith("blocks.")})
    for b in blocks:
        p = f"blocks.{b}."
        for name in _BRANCH_KEYS:
            if p + "branch1." + name in ref_state:   # also maps parameter-only dicts (gradients)
                out[p + name] = torch.cat((ref_state[p + "branch1." + name],
                                           ref_state[p + "branch2." + name]), dim=0)
        for bn in ("bn1", "bn2"):
            key = p + "branch1." + bn + ".num_batches_tracked"
            if key in ref_state:
                out[p + bn + ".num_batches_tracked"] = ref_state[key].clone()
    return out


def reference_state_from_fast(fast_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The inverse of ``fast_state_from_reference``: split dim 0 into the two branches."""
    out: Dict[str, torch.Tensor] = {}
    blocks = sorted({int(k.split(".")[1]) for k in fast_state if k.startswith("blocks.")})
    fused = {f"blocks.{b}.{n}" for b in blocks for n in _BRANCH_KEYS}
    fused |= {f"blocks.{b}.{bn}.num_batches_tracked" for b in blocks for bn in ("bn1", "bn2")}
    for key, value in fast_state.items():
        if key not in fused:
            out[key] = value.clone()
    for b in blocks:
        p = f"blocks.{b}."
        for name in _BRANCH_KEYS:
            first, second = fast_state[p + name].chunk(2, dim=0)
            out[p + "branch1." + name] = first.clone()
            out[p + "branch2." + name] = second.clone()
        for bn in ("bn1", "bn2"):
            for br in ("branch1", "branch2"):
                out[p + br + "." + bn + ".num_batches_tracked"] = fast_state[p + bn + ".num_batches_tracked"].clone()
    return out


def fast_from_reference(ref: ReferenceShakeShake, second_conv: str = "grouped") -> FastShakeShake:
    """A fast model with exactly the reference model's weights and BN state."""
    fast = FastShakeShake(ref.depth, ref.width, ref.shake_level, second_conv)
    fast.to(device=next(ref.parameters()).device, dtype=next(ref.parameters()).dtype)
    fast.load_state_dict(fast_state_from_reference(ref.state_dict()))
    fast.train(ref.training)
    return fast
