"""The rule table of ``mltools cython check``: codes, severities, what and fix.

The codes are a contract (configuration, ``# noqa`` comments and JSON
consumers name them); severities are the defaults a finding starts with.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Tuple

from mltools.errors import UsageError
from mltools.findings import Severity


@dataclass(frozen=True)
class Rule:
    code: str
    severity: Severity
    title: str        # the pattern, one line
    fix: str          # what to write instead, one line


RULES: Dict[str, Rule] = {r.code: r for r in (
    Rule("CYP000", Severity.INFO,
         "a pointer cast whose operand's type could not be resolved (missing .pxd, unresolved cimport)",
         "make the declarations visible: pass -I DIR, -E NAME=VALUE or --cplus, or install the "
         "package whose .pxd is cimported"),
    Rule("CYP001", Severity.ERROR,
         "<T*>E with E a Python object holding an address: the cast yields the address of the int object",
         "convert the int first: <T*><uintptr_t>E (or PyLong_AsVoidPtr(E) if it may be negative), "
         "or keep the address in a cdef uintptr_t"),
    Rule("CYP002", Severity.ERROR,
         "<T*>E.data or char* from E.data with E a Python object: .data is a buffer object there, "
         "not the array's memory",
         "type the array: cdef double[::1] v = E and use &v[0], or cnp.ndarray E not None with "
         "cnp.PyArray_DATA(E), or <T*><uintptr_t>E.ctypes.data"),
    Rule("CYP003", Severity.WARNING,
         "<void*>E / <T*>E with E typed bytes, bytearray or str: points at the object header",
         "use <const char*>E (or PyBytes_AS_STRING(E)) for the bytes' buffer"),
    Rule("CYP004", Severity.WARNING,
         "<void*>E with E a generic Python object that is not kept alive: an identity handle or a "
         "lost address",
         "type E (cdef uintptr_t for an address, the extension type for a handle), keep it alive "
         "(Py_INCREF(E) or self.attr = E) or mark an intended handle with # noqa: CYP004"),
    Rule("CYP005", Severity.WARNING,
         "<void*>arr with arr typed cnp.ndarray or array.array: the object, not its data",
         "use cnp.PyArray_DATA(arr) for an ndarray or arr.data.as_voidptr for an array.array"),
    Rule("CYP006", Severity.WARNING,
         "&v[...] with v a memoryview that is neither C- nor F-contiguous: strided memory handed to C",
         "declare the view contiguous: double[::1] (C) or double[:, ::1] / double[::1, :]"),
    Rule("CYP007", Severity.WARNING,
         "<object>p with p a pointer that may be NULL (a C call result, not checked): NULL crashes",
         "check first: if p == NULL: raise ..."),
    Rule("CYP010", Severity.WARNING,
         "a pointer cast to an integer that cannot hold it everywhere: int, short, char, long or "
         "unsigned long (32 bits on 64-bit Windows), or the signed Py_ssize_t",
         "cast to uintptr_t (or intptr_t); keep the value in a variable of that type"),
    Rule("CYP014", Severity.WARNING,
         "an integer cast to a pointer where the integer is long, unsigned long (32 bits on 64-bit "
         "Windows) or Py_ssize_t (signed): the address was kept in a type that may not hold it",
         "declare the variable (or the parameter) uintptr_t; for a Python int use <T*><uintptr_t>E"),
    Rule("CYP015", Severity.WARNING,
         "<T*><I>p: a pointer converted to an integer type other than uintptr_t/intptr_t and back",
         "cast through uintptr_t, or drop the round trip (numpy: PyArray_BYTES instead of "
         "<char*><size_t>PyArray_DATA)"),
    Rule("CYP011", Severity.WARNING,
         "arithmetic on void*: a GNU extension that MSVC and strict compilers reject",
         "cast to char* first: <char*>p + offset"),
    Rule("CYP013", Severity.WARNING,
         ".data / PyArray_DATA on a typed cnp.ndarray def parameter without 'not None': None crashes",
         "declare the parameter cnp.ndarray arr not None"),
    Rule("CYP020", Severity.ERROR,
         "a C pointer into a Python object that dies while the pointer is kept: stored in a field or "
         "global, returned, taken from a property's new value, or returned by a helper from a "
         "temporary argument",
         "keep the object alive as long as the pointer (self._owner = b, a local that lives through "
         "the C call), or copy the bytes (strdup, a C buffer)"),
)}


def expand_codes(spec: Iterable[str], what: str) -> Tuple[str, ...]:
    """Codes named by ``spec`` (codes or prefixes such as ``CYP00``; commas allowed)."""
    out = []
    for item in spec:
        for part in str(item).split(","):
            part = part.strip().upper()
            if not part:
                continue
            hits = [c for c in RULES if c.startswith(part)]
            if not hits:
                raise UsageError(f"{what}: unknown rule code {part!r} (known: {', '.join(RULES)})")
            out.extend(h for h in hits if h not in out)
    return tuple(out)
