"""Shake-Shake ResNet training-throughput benchmark (``mltools bench shakeshake``).

Modules (all but this one and ``peaks``/``flops`` need torch, the ``mltools[torch]`` extra):

- ``shake``: the shake mix (forward α, backward β) and the α/β sources.
- ``model``: the official Shake-Shake-26 2xKd architecture as ``reference``
  (two branch modules) and ``fast`` (fused branches), with the weight mapping.
- ``data``: synthetic on-device batches; CIFAR-10 pickle batches with on-device augmentation.
- ``flops``: analytic FLOPs per image; ``peaks``: peak TFLOP/s of known GPUs.
- ``bench``: the timed benchmark, the training run and the DDP plumbing.
"""
from __future__ import annotations

TORCH_HINT = ("torch is not installed: pip install 'mltools[torch]' "
              "(on a machine without a GPU first pip install torch==2.13.0, the CPU build)")


def require_torch():
    """Import torch or raise MissingDependencyError with the install hint."""
    from mltools.errors import MissingDependencyError

    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(TORCH_HINT) from exc
    return torch
