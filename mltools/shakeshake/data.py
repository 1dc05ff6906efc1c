"""Data on the device: synthetic CIFAR-shaped batches, or CIFAR-10 pickle batches.

The CIFAR-10 python version (``data_batch_1`` … ``data_batch_5``, ``test_batch``)
is read once into device memory as uint8; each training batch is normalised
(fb.resnet.torch mean/std), zero-padded by 4 pixels *after* normalisation (so
the pad is 0 in normalised space, as fb.resnet.torch does), randomly cropped
back to 32×32 and horizontally flipped with probability 0.5, per image and on
the device: no CPU loader sits in the step.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Tuple

from mltools.shakeshake import require_torch

torch = require_torch()   # MissingDependencyError with the install hint, not ModuleNotFoundError

from mltools.errors import InputError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = (125.3, 123.0, 113.9)
STD = (63.0, 62.1, 66.7)
PAD = 4


def synthetic_batches(count: int, batch_size: int, device: torch.device, *,
                      seed: int = 0, channels_last: bool = False
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``count`` fixed batches of normalised-looking images and labels, made on the device."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((count, batch_size, 3, 32, 32), generator=gen, device=device)
    y = torch.randint(0, 10, (count, batch_size), generator=gen, device=device)
    if channels_last:
        x = torch.stack([b.contiguous(memory_format=torch.channels_last) for b in x])
    return x, y


def _find_dir(root: Path) -> Path:
    for cand in (root, root / "cifar-10-batches-py"):
        if all((cand / f).is_file() for f in TRAIN_FILES + (TEST_FILE,)):
            return cand
    missing = [f for f in TRAIN_FILES + (TEST_FILE,) if not (root / f).is_file()]
    raise InputError(f"{root}: not a CIFAR-10 python directory (missing {', '.join(missing)}; "
                     "expected data_batch_1..5 and test_batch from cifar-10-python.tar.gz)")


def _read_batch(path: Path):
    import numpy as np

    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a CIFAR-10 pickle batch ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise InputError(f"{path}: not a CIFAR-10 pickle batch (data shape {data.shape})")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise InputError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


@dataclass
class CifarOnDevice:
    """CIFAR-10 held on the device as uint8 (train 50,000 and test 10,000 images)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    directory: str

    @property
    def train_size(self) -> int:
        return int(self.train_x.shape[0])


def load_cifar10(directory: str, device: torch.device, *,
                 max_train: Optional[int] = None) -> CifarOnDevice:
    import numpy as np

    root = Path(directory)
    if not root.is_dir():
        raise InputError(f"{directory}: no such directory")
    d = _find_dir(root)
    parts = [_read_batch(d / f) for f in TRAIN_FILES]
    tx = np.concatenate([p[0] for p in parts])
    ty = np.concatenate([p[1] for p in parts])
    if max_train is not None:
        tx, ty = tx[:max_train], ty[:max_train]
    vx, vy = _read_batch(d / TEST_FILE)
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)  # noqa: E731
    return CifarOnDevice(to(tx), to(ty), to(vx), to(vy), str(d))


def normalise(images_u8: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=images_u8.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images_u8.device, dtype=dtype).view(1, 3, 1, 1)
    return (images_u8.to(dtype) - mean) / std


def augment(images_u8: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Normalise, zero-pad 4, random 32×32 crop and random horizontal flip, per image."""
    n = images_u8.shape[0]
    dev = images_u8.device
    x = torch.nn.functional.pad(normalise(images_u8), (PAD, PAD, PAD, PAD))
    off = torch.randint(0, 2 * PAD + 1, (2, n), device=dev, generator=generator)
    flip = torch.rand(n, device=dev, generator=generator) < 0.5
    ar = torch.arange(32, device=dev)
    rows = (off[0][:, None] + ar)                               # (n, 32)
    cols = off[1][:, None] + torch.where(flip[:, None], 31 - ar, ar)  # flipped column order
    idx_n = torch.arange(n, device=dev)[:, None, None]
    out = x.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]   # (n, 32, 32, 3)
    return out.permute(0, 3, 1, 2).contiguous()


def train_batches(data: CifarOnDevice, batch_size: int, *, rank: int = 0, world: int = 1,
                  generator: Optional[torch.Generator] = None
                  ) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented batches (drop_last), this rank's share of each."""
    n = data.train_size
    perm = torch.randperm(n, device=data.train_x.device, generator=generator)
    step = batch_size * world
    for start in range(0, n - step + 1, step):
        idx = perm[start + rank * batch_size:start + (rank + 1) * batch_size]
        yield augment(data.train_x[idx], generator), data.train_y[idx]


def test_batches(data: CifarOnDevice, batch_size: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, data.test_x.shape[0], batch_size):
        yield normalise(data.test_x[start:start + batch_size]), data.test_y[start:start + batch_size]
