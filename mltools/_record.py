"""Frozen result types without the start-up cost of :mod:`dataclasses`.

``@record`` turns a class with annotated fields (and defaults, and
:func:`factory` for mutable ones) into what ``@dataclass(frozen=True)`` makes
of it: ``__init__`` (positional or keyword), equality and hashing over the
fields, ``repr``, and assignment refused. ``fields``, ``replace`` and
``is_record`` stand in for the dataclasses functions; ``mltools._jsonio``
writes records as it writes dataclasses.

Why: ``import dataclasses`` pulls in ``inspect`` (ast, dis, tokenize) and each
dataclass compiles several generated functions at import, together about a
third of what ``mltools elf tree FILE`` spends starting up. The commands that
must answer in milliseconds use records; everything else may keep dataclasses.
"""
from __future__ import annotations

__all__ = ["record", "factory", "fields", "replace", "is_record", "FrozenRecordError"]

_MISSING = object()


class FrozenRecordError(AttributeError):
    """Assigning to a field of a record (as dataclasses.FrozenInstanceError)."""


class factory:                                        # noqa: N801 - used like dataclasses.field(default_factory=)
    """A default made fresh for each instance: ``details: dict = factory(dict)``."""

    __slots__ = ("make",)

    def __init__(self, make):
        self.make = make


def _setattr(self, name, value):
    raise FrozenRecordError(f"cannot assign to field {name!r}")


def _delattr(self, name):
    raise FrozenRecordError(f"cannot delete field {name!r}")


def _eq(self, other):
    if other.__class__ is not self.__class__:
        return NotImplemented
    d, o = self.__dict__, other.__dict__
    return all(d[n] == o[n] for n in self.__record_compare__)


def _hash(self):
    d = self.__dict__
    return hash(tuple(d[n] for n in self.__record_compare__))


def _repr(self):
    d = self.__dict__
    return f"{self.__class__.__qualname__}(" + ", ".join(f"{n}={d[n]!r}" for n in self.__record_compare__) + ")"


def _make_init(qualname: str, names: tuple, defaults: dict):
    """An __init__ taking the fields positionally or by keyword. Built from a closure, not
    generated source: the first compile() of a process costs as much as the rest of a record."""
    count = len(names)
    known = frozenset(names)
    fill = tuple((n, defaults[n]) for n in names if n in defaults)
    required = tuple(n for n in names if n not in defaults)

    def __init__(self, *args, **kwargs):
        d = self.__dict__
        if len(args) > count:
            raise TypeError(f"{qualname}() takes {count} arguments, {len(args)} given")
        d.update(zip(names, args))
        if kwargs:
            if not known.issuperset(kwargs) or (args and not d.keys().isdisjoint(kwargs)):
                bad = next(k for k in kwargs if k not in known or k in d)
                raise TypeError(f"{qualname}() got an unexpected or repeated argument {bad!r}")
            d.update(kwargs)
        if len(d) < count:
            for n, value in fill:
                if n not in d:
                    d[n] = value.make() if value.__class__ is factory else value
            if len(d) < count:
                missing = [n for n in required if n not in d]
                raise TypeError(f"{qualname}() missing {len(missing)} required argument(s): {', '.join(missing)}")

    __init__.__qualname__ = f"{qualname}.__init__"
    return __init__


def record(cls):
    """Make ``cls`` a frozen record; see the module docstring."""
    names = []
    defaults = {}
    for base in reversed(cls.__mro__[1:]):
        for n in getattr(base, "__record_fields__", ()):
            if n not in names:
                names.append(n)
            if n in base.__record_defaults__:
                defaults[n] = base.__record_defaults__[n]
    for n, annotation in cls.__dict__.get("__annotations__", {}).items():
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        if n not in names:
            names.append(n)
        value = cls.__dict__.get(n, _MISSING)
        if value is not _MISSING:
            defaults[n] = value
            delattr(cls, n)                   # the default lives in __init__, not on the class
    seen_default = False
    for n in names:
        if n in defaults:
            seen_default = True
        elif seen_default:
            raise TypeError(f"{cls.__name__}: field {n!r} without a default follows one with a default")
    cls.__init__ = _make_init(cls.__qualname__, tuple(names), defaults)
    cls.__record_fields__ = tuple(names)
    cls.__record_compare__ = tuple(n for n in names if not n.startswith("_"))
    cls.__record_defaults__ = defaults
    cls.__setattr__ = _setattr
    cls.__delattr__ = _delattr
    for name, method in (("__eq__", _eq), ("__hash__", _hash), ("__repr__", _repr)):
        if name not in cls.__dict__ or (name == "__hash__" and cls.__dict__[name] is None):
            setattr(cls, name, method)      # as dataclasses: a method the class defines stays
    return cls


def is_record(obj) -> bool:
    return hasattr(type(obj) if not isinstance(obj, type) else obj, "__record_fields__")


def fields(obj) -> tuple:
    """The field names of a record (or record class), in order."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__record_fields__


def replace(obj, **changes):
    """A copy of the record ``obj`` with some fields changed (as dataclasses.replace)."""
    values = {n: obj.__dict__[n] for n in type(obj).__record_fields__}
    unknown = set(changes) - set(values)
    if unknown:
        raise TypeError(f"{type(obj).__name__} has no field {sorted(unknown)[0]!r}")
    values.update(changes)
    return type(obj)(**values)
