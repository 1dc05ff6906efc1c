"""The shake mix of Shake-Shake: forward α·h1 + (1−α)·h2, backward β·g and (1−β)·g.

α and β are independent U(0,1) draws, one per image (``"image"``) or one per
block and step (``"batch"``), made on the tensor's device so no host→device
copy sits in the step (and CUDA graphs replay fresh values). In eval mode the
mix is 0.5·h1 + 0.5·h2.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

from mltools.shakeshake import require_torch

torch = require_torch()   # MissingDependencyError with the install hint, not ModuleNotFoundError

SHAKE_LEVELS = ("image", "batch")


class ShakeMix(torch.autograd.Function):
    """Forward α·h1 + (1−α)·h2; backward β·g to h1 and (1−β)·g to h2.

    Saves only β (not h1, h2): the backward needs nothing else.
    """

    @staticmethod
    def forward(ctx, h1, h2, alpha, beta):
        ctx.save_for_backward(beta)
        return h2 + alpha * (h1 - h2)

    @staticmethod
    def backward(ctx, grad):
        (beta,) = ctx.saved_tensors
        g1 = beta * grad
        return g1, grad - g1, None, None


def shake_mix(h1: torch.Tensor, h2: torch.Tensor, alpha: torch.Tensor,
              beta: torch.Tensor) -> torch.Tensor:
    """The custom-Function mix (used by the reference model)."""
    return ShakeMix.apply(h1, h2, alpha, beta)


def shake_mix_traceable(h1: torch.Tensor, h2: torch.Tensor, alpha: torch.Tensor,
                        beta: torch.Tensor) -> torch.Tensor:
    """The same mix in plain autograd ops, which torch.compile fuses with the
    BatchNorm around it: value h2 + α·(h1−h2); gradient β·g and (1−β)·g,
    because the (α−β) term is detached."""
    d = h1 - h2
    return h2 + beta * d + ((alpha - beta) * d).detach()


def draw_coefficients(n: int, level: str, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Independent α, β ~ U(0,1) on ``like``'s device: shape (n,1,1,1) or (1,1,1,1)."""
    rows = n if level == "image" else 1
    ab = torch.rand((2, rows, 1, 1, 1), device=like.device, dtype=torch.float32)
    return ab[0].to(like.dtype), ab[1].to(like.dtype)


# A coefficient source answers (block index, batch size, a tensor of the batch)
# with (α, β). None means "draw fresh values on the device".
CoefficientSource = Callable[[int, int, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


class FixedCoefficients:
    """Injects given α/β per block (for tests and for DDP equality checks).

    ``alphas[i]``/``betas[i]`` are tensors of shape (N,1,1,1) or scalars per block i.
    """

    def __init__(self, alphas: Sequence, betas: Sequence):
        self.alphas = list(alphas)
        self.betas = list(betas)

    def __call__(self, block: int, n: int, like: torch.Tensor):
        def as_tensor(v):
            t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
            return t.reshape(-1, 1, 1, 1) if t.dim() else t.reshape(1, 1, 1, 1)
        return as_tensor(self.alphas[block]), as_tensor(self.betas[block])


def global_index_coefficients(num_blocks: int, global_batch: int, rank: int, world: int,
                              seed: int, level: str = "image") -> FixedCoefficients:
    """α/β for one step, drawn for the *global* batch from a shared seed and
    sliced to this rank's samples, so that N ranks × B images see exactly the
    coefficients one process sees for N·B images (DDP equality)."""
    if global_batch % world:
        raise ValueError("global batch must divide evenly over the ranks")
    per_rank = global_batch // world
    gen = torch.Generator().manual_seed(seed)
    rows = global_batch if level == "image" else 1
    alphas, betas = [], []
    for _ in range(num_blocks):
        a = torch.rand(rows, generator=gen)
        b = torch.rand(rows, generator=gen)
        if level == "image":
            a, b = a[rank * per_rank:(rank + 1) * per_rank], b[rank * per_rank:(rank + 1) * per_rank]
        alphas.append(a)
        betas.append(b)
    return FixedCoefficients(alphas, betas)


def coefficients_for(block: int, n: int, like: torch.Tensor, level: str,
                     source: Optional[CoefficientSource]) -> Tuple[torch.Tensor, torch.Tensor]:
    if source is None:
        return draw_coefficients(n, level, like)
    return source(block, n, like)
