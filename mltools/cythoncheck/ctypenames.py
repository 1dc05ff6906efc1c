"""C types judged by the names they are declared with (typed mode).

Two questions the rules ask about a Cython type:

* Can this integer type hold a pointer on every platform CPython runs on?
  The answer depends on the *declared* name, not on the type under the
  typedefs: Cython's own ``libc/stdint.pxd`` declares ``ctypedef size_t
  uintptr_t`` and ``ctypedef signed long int64_t``, and numpy's pxd declares
  ``ctypedef signed long npy_intp``. Stripped of typedefs, ``int64_t`` looks
  like ``long`` (32 bits on 64-bit Windows) although the C header makes it 64
  bits everywhere; so a type is judged by every name along its typedef chain.
* Is this struct the C layout of a Python object (``PyDateTime_DateTime``,
  ``PyArray_Descr``, a ``cdef class``'s object struct)? A pointer cast of a
  Python object to such a struct is a typed view of the object, not an
  address taken from it.
"""
from __future__ import annotations

import re
from typing import Iterable, List, Optional, Set, Tuple

# Integer types that are at least as wide as a pointer wherever CPython runs (C99 long long is 64 bits,
# and no supported platform has pointers wider than 64 bits; size_t and ptrdiff_t have the width of
# the address space on all of them).
POINTER_WIDE = frozenset({
    "uintptr_t", "intptr_t", "Py_intptr_t", "Py_uintptr_t", "npy_intp", "npy_uintp",
    "long long", "unsigned long long", "signed long long", "PY_LONG_LONG", "uPY_LONG_LONG",
    "int64_t", "uint64_t", "int_least64_t", "uint_least64_t", "int_fast64_t", "uint_fast64_t",
    "intmax_t", "uintmax_t", "npy_int64", "npy_uint64", "npy_longlong", "npy_ulonglong",
    "size_t", "ssize_t", "ptrdiff_t", "Py_hash_t", "Py_uhash_t",
})
# The only integer types C guarantees a pointer survives a round trip through (C11 7.20.1.4).
ROUND_TRIP = frozenset({"uintptr_t", "intptr_t", "Py_intptr_t", "Py_uintptr_t"})
# Integer types narrower than a pointer somewhere: int, short and char on every 64-bit platform,
# long and unsigned long on 64-bit Windows (LLP64).
LLP64_NARROW = frozenset({"long", "unsigned long", "signed long"})
ALWAYS_NARROW = frozenset({"int", "unsigned int", "signed int", "short", "unsigned short",
                           "signed short", "char", "unsigned char", "signed char"})
# Cython's own pointer-sized builtin integer classes, by class name, and the C name they stand for.
_BUILTIN_NAMES = {"CSizeTType": "size_t", "CSSizeTType": "ssize_t", "CPtrdiffTType": "ptrdiff_t",
                  "CPySSizeTType": "Py_ssize_t"}
# A signed size: as wide as a pointer, but an address above PY_SSIZE_T_MAX comes back negative
# (pyzmq 7a417e2f moved its handles off it for that reason).
SIGNED_SIZE = "Py_ssize_t"


def _base_name(t) -> str:
    return _BUILTIN_NAMES.get(type(t).__name__) or str(t)


def declared_names(t) -> Tuple[List[str], object]:
    """The names along ``t``'s typedef chain, outermost first, and the type under it (const and
    volatile looked through)."""
    names: List[str] = []
    for _ in range(30):
        if getattr(t, "is_cv_qualified", False):
            t = t.cv_base_type
            continue
        if getattr(t, "is_const", False) and hasattr(t, "const_base_type"):   # Cython 3.0
            t = t.const_base_type
            continue
        if getattr(t, "is_typedef", False):
            names.append(getattr(t, "typedef_name", None) or str(t))
            t = t.typedef_base_type
            continue
        names.append(_base_name(t))
        return names, t
    return names, t


def is_pointer(t) -> bool:
    if t is None:
        return False
    _names, base = declared_names(t)
    return bool(getattr(base, "is_ptr", False))


def _is_plain_int(base) -> bool:
    return bool(getattr(base, "is_int", False) and not getattr(base, "is_enum", False)
                and type(base).__name__ != "CBIntType")


def narrow_int(t, llp64_only: bool = False) -> Optional[Tuple[str, str]]:
    """(declared name, name under the typedefs) of ``t`` when it cannot carry a pointer
    everywhere (int, long, their typedefs such as uint32_t, or the signed Py_ssize_t), else None.

    ``llp64_only``: only the types that are 64 bits on Linux but not a safe home for an address
    elsewhere: long / unsigned long (32 bits on 64-bit Windows) and Py_ssize_t (signed)."""
    if t is None or getattr(t, "is_error", False):
        return None
    names, base = declared_names(t)
    if not _is_plain_int(base) or any(n in POINTER_WIDE for n in names):
        return None
    under = names[-1]
    if under in LLP64_NARROW or under == SIGNED_SIZE or (not llp64_only and under in ALWAYS_NARROW):
        return names[0], under
    return None


def round_trip_name(t) -> Optional[str]:
    """For an integer type a pointer passes through: its declared name unless it is (u)intptr_t."""
    if t is None or getattr(t, "is_error", False):
        return None
    names, base = declared_names(t)
    if not _is_plain_int(base) or any(n in ROUND_TRIP for n in names):
        return None
    return names[0]


def why_narrow(base_name: str) -> str:
    """Why an integer whose type is ``base_name`` (under its typedefs) cannot hold a pointer."""
    if base_name == SIGNED_SIZE:
        return "is signed: an address above PY_SSIZE_T_MAX comes back negative"
    if base_name in LLP64_NARROW:
        return "is 32 bits on 64-bit Windows: the upper half of the address is lost there"
    return "is narrower than a 64-bit pointer: the upper bits of the address are lost"


# --- object layouts ------------------------------------------------------------------------

# Py + a letter: PyDateTime_DateTime, PyArray_Descr, PycairoSurface, PyGObject. Not Py_buffer
# or Py_ssize_t ("Py_"), which are not object structs.
_OBJECT_STRUCT_NAME = re.compile(r"^_?Py[A-Za-z]")


def is_object_struct_name(name: str) -> bool:
    """``PyDateTime_DateTime``, ``const PyObject``: named like a Python object's C struct."""
    return bool(_OBJECT_STRUCT_NAME.match(name.replace("const ", "").replace("struct ", "").strip()))


def _struct_first_member_is_pyobject(struct) -> bool:
    scope = getattr(struct, "scope", None)
    members = getattr(scope, "var_entries", None) or []
    if not members:
        return False
    names, _ = declared_names(members[0].type)
    return any(n in ("PyObject", "struct PyObject", "PyVarObject", "struct PyVarObject") for n in names)


def object_struct_names(scopes: Iterable[object]) -> Set[str]:
    """The C names of the object structs of every extension type visible from ``scopes``
    (their entries, and the modules they cimport, recursively)."""
    out: Set[str] = set()
    seen: Set[int] = set()
    stack = list(scopes)
    while stack:
        scope = stack.pop()
        if scope is None or id(scope) in seen:
            continue
        seen.add(id(scope))
        for entry in list(getattr(scope, "entries", {}).values()):
            t = getattr(entry, "type", None)
            if getattr(t, "is_extension_type", False):
                cname = getattr(t, "objstruct_cname", None)
                if cname:
                    out.add(cname)
            elif getattr(entry, "as_module", None) is not None:
                stack.append(entry.as_module)
        # Only what this module cimports: a package's other submodules depend on what else was
        # checked before in the same Cython context.
        stack.extend(getattr(scope, "cimported_modules", ()) or ())
    return out


def is_object_layout(ptr_type, object_structs) -> bool:
    """True when ``ptr_type`` points at the C layout of a Python object: a struct named Py<Letter>...,
    one whose first member is a PyObject (PyObject_HEAD / ob_base), or the object struct of an
    extension type. ``object_structs`` is a callable returning the set of object-struct C names
    (computed only when the cheaper tests fail)."""
    names, base = declared_names(ptr_type)
    if not getattr(base, "is_ptr", False):
        return False
    pointee_names, struct = declared_names(base.base_type)
    pointee_names = pointee_names + [n for n in (getattr(struct, "cname", None), getattr(struct, "name", None)) if n]
    if any(is_object_struct_name(n) for n in pointee_names):
        return True
    if getattr(struct, "is_struct_or_union", False) and _struct_first_member_is_pyobject(struct):
        return True
    return bool(set(pointee_names) & object_structs())
