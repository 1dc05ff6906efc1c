"""Turning result objects into the JSON every ``--json`` prints."""
from __future__ import annotations

import enum
import json
import math
import os

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Any


def to_jsonable(obj: Any) -> Any:
    """Records (mltools._record), dataclasses, enums, paths, tuples, sets and numpy scalars to plain JSON types.

    Non-finite floats become strings ("inf", "-inf", "nan") so the output stays
    strict JSON that every parser accepts.
    """
    names = getattr(type(obj), "__record_fields__", None)      # mltools._record
    if names is not None:
        return {n: to_jsonable(getattr(obj, n)) for n in names if not n.startswith("_")}
    if hasattr(obj, "__dataclass_fields__") and not isinstance(obj, type):
        import dataclasses
        return {f.name: to_jsonable(getattr(obj, f.name))
                for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype"):   # numpy scalar / 0-d array
        return to_jsonable(obj.item())
    if hasattr(obj, "tolist"):                           # numpy array
        return to_jsonable(obj.tolist())
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"cannot turn {type(obj).__name__} into JSON")


def document(result: Any, schema: str, version: int) -> dict:
    """The JSON document for ``result``: ``schema`` and ``version`` first."""
    body = to_jsonable(result)
    if not isinstance(body, dict):
        body = {"result": body}
    doc = {"schema": schema, "version": int(version)}
    doc.update({k: v for k, v in body.items() if k not in ("schema", "version")})
    return doc


def dumps(result: Any, schema: str, version: int) -> str:
    return json.dumps(document(result, schema, version), indent=2, allow_nan=False)
