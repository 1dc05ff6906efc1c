"""Access to the compiled parts of mltools with a clear error when missing."""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from mltools.errors import NativeNotBuiltError

_REBUILD_HINT = "reinstall with `pip install -e .` (or `pip install .`) to build it"


def load_extension(name: str) -> ModuleType:
    """Import the compiled module ``mltools.<name>`` or raise NativeNotBuiltError."""
    try:
        return importlib.import_module(f"mltools.{name}")
    except ImportError as exc:
        raise NativeNotBuiltError(
            f"the compiled module mltools.{name} is not importable ({exc}); {_REBUILD_HINT}"
        ) from exc


def shared_object_path(name: str) -> str:
    """Path of a plain shared object built inside the package (never imported).

    Found with ``find_spec`` so the CPython ABI tag in the file name does not matter.
    """
    spec = importlib.util.find_spec(f"mltools.{name}")
    if spec is None or not spec.origin or not spec.origin.endswith(".so"):
        raise NativeNotBuiltError(f"the shared object mltools.{name} is missing; {_REBUILD_HINT}")
    return spec.origin
