"""CYP020: a C pointer into a Python object that dies while the pointer is still used.

Cython converts ``bytes``/``str`` to ``char*`` (and casts any object to a
pointer) without taking a reference: the pointer is valid only while someone
holds the object. Cython rejects the direct forms (``self.c.name =
name.encode()``: "Storing unsafe C derivative of temporary Python reference")
but not the same thing through a local, a return, a property or a helper
function. The shapes checked here, each from a real fixed bug:

* STORE: ``b = name.encode(); self.c.name = b`` -- the pointer is stored where
  it outlives the function (a field reached from ``self``, a typed argument, a
  pointer argument or a C global) and ``b`` is bound in this function to a new
  object that nothing keeps (grackle 207b0998).
* RETURN: a function returning a pointer returns one into such a local or into
  a temporary (pyzmq a878237e, pure-Python mode).
* PROP: ``cdef const char* p = self.path`` where ``path`` is a property whose
  getter builds a new object each time (py-libzfs c0465725).
* CALL: ``get_font(dc.GetFont())`` where the cdef function ``get_font`` returns
  a pointer derived from that argument, and the argument is a temporary that
  Cython releases right after the call (sparcians/map 102a1199).

"Bound to a new object" means assigned from a call, an operator, a slice, an
f-string or a property read somewhere in the function; a plain name or
attribute is an alias of an object someone else owns and is not flagged.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Set

from mltools.cythoncheck import _core
from mltools.cythoncheck._core import cls, unwrap
from mltools.cythoncheck.ctypenames import is_pointer

_CALLS = frozenset({"SimpleCallNode", "GeneralCallNode", "PythonCapiCallNode"})
_OPERATORS = frozenset({"AddNode", "SubNode", "MulNode", "DivNode", "ModNode", "PowNode", "MatMultNode",
                        "IntBinopNode", "NumBinopNode"})
_BUILDERS = frozenset({"SliceIndexNode", "JoinedStrNode", "FormattedValueNode", "ListNode", "TupleNode",
                       "DictNode", "SetNode", "ComprehensionNode", "GeneratorExpressionNode"})
# C API calls that return a pointer into their first argument.
_BUFFER_OF_ARG = frozenset({"PyBytes_AS_STRING", "PyBytes_AsString", "PyByteArray_AS_STRING",
                            "PyByteArray_AsString", "PyUnicode_AsUTF8", "PyUnicode_AsUTF8AndSize",
                            "PyUnicode_DATA", "PyUnicode_AsUnicode"})
# Cython's own errors for the direct forms of this bug.
CYTHON_MESSAGES = ("Storing unsafe C derivative of temporary Python reference",
                   "Unsafe C derivative of temporary Python reference used in conditional expression",
                   "Casting temporary Python object to non-numeric non-Python type")


def is_property_read(node) -> bool:
    """``obj.name`` where name is a property with a getter (a ``cdef public`` attribute is a
    property too, but reading it returns the stored object)."""
    node = unwrap(node)
    entry = getattr(node, "entry", None)
    return cls(node) == "AttributeNode" and bool(getattr(entry, "is_property", False)) \
        and not getattr(entry, "is_variable", False)


def creates_object(node) -> bool:
    """``node`` evaluates to a Python object made for this expression (nobody else holds it)."""
    node = unwrap(node)
    name = cls(node)
    if name in _CALLS or name in _BUILDERS:
        return True
    if name in _OPERATORS or name.endswith("BinopNode"):
        return bool(getattr(getattr(node, "type", None), "is_pyobject", False))
    return is_property_read(node)


def _is_pyobject(node) -> bool:
    return bool(getattr(getattr(node, "type", None), "is_pyobject", False))


def pointer_source(expr):
    """The Python object a C pointer expression points into, or None: a bytes/str -> char*
    conversion, ``<T*>obj``, or a C API call returning its argument's buffer."""
    node = unwrap(expr, keep_from_py=True)
    name = cls(node)
    if name == "CoerceFromPyTypeNode" and is_pointer(getattr(node, "type", None)):
        return unwrap(node.arg)
    if name == "TypecastNode" and is_pointer(getattr(node, "type", None)):
        operand = unwrap(node.operand)
        return operand if _is_pyobject(operand) else None
    if name in _CALLS and _core._call_name(node.function) in _BUFFER_OF_ARG:
        args = list(getattr(node, "args", None) or [])
        if args and _is_pyobject(unwrap(args[0])):
            return unwrap(args[0])
    return None


def owner_of(expr, facts) -> Optional[object]:
    """Like :func:`pointer_source`, also through one C pointer local (``cdef char* p = b``)."""
    src = pointer_source(expr)
    if src is not None:
        return src
    node = unwrap(expr)
    if cls(node) == "NameNode" and is_pointer(getattr(node, "type", None)) and facts is not None:
        entry = getattr(node, "entry", None)
        if entry is None or not getattr(entry, "is_local", False):
            return None
        for rhs in facts.assigned.get(node.name, ()):
            # facts hold the right-hand sides with Cython's coercions stripped: a Python name
            # here was converted to the pointer.
            if cls(rhs) == "NameNode" and _is_pyobject(rhs):
                return rhs
            src = pointer_source(rhs)
            if src is not None:
                return src
    return None


def outlives_function(lhs) -> bool:
    """``lhs`` is storage that lives on after the function returns."""
    lhs = unwrap(lhs)
    if not is_pointer(getattr(lhs, "type", None)):
        return False
    name = cls(lhs)
    if name == "NameNode":
        return bool(getattr(getattr(lhs, "entry", None), "is_cglobal", False))
    if name not in ("AttributeNode", "IndexNode"):
        return False
    root = _core.root_name(lhs)
    entry = getattr(root, "entry", None) if root is not None else None
    if entry is None:
        return False
    if getattr(entry, "is_cglobal", False):
        return True
    t = getattr(entry, "type", None)
    return bool(getattr(entry, "is_arg", False) and (getattr(t, "is_extension_type", False) or is_pointer(t)))


def new_local_object(x, facts) -> bool:
    """``x`` is a local or argument name this function binds to a new object, and nothing in
    the function keeps that object (a Python attribute, item or global, a container, Py_INCREF)."""
    if cls(x) != "NameNode" or x.name == "self" or facts is None:
        return False
    entry = getattr(x, "entry", None)
    if entry is None or not (getattr(entry, "is_local", False) or getattr(entry, "is_arg", False)):
        return False
    if x.name in facts.kept_py or x.name in facts.incref:
        return False
    return any(creates_object(r) for r in facts.assigned.get(x.name, ()))


def returns_new_object(body) -> bool:
    """A getter body with a ``return`` that builds a new object."""
    return any(cls(n) == "ReturnStatNode" and getattr(n, "value", None) is not None and creates_object(n.value)
               for n in _core.walk(body, _core.FUNCTION_NODES))


def fresh_properties(root) -> Set[int]:
    """ids of the property entries, in this module, whose getter returns a new object."""
    out: Set[int] = set()
    for n in _core.walk(root):
        if cls(n) != "PropertyNode":
            continue
        entry = getattr(n, "entry", None)
        getter = next((d for d in _core.walk(n.body, _core.FUNCTION_NODES)
                       if cls(d) == "DefNode" and getattr(d, "name", None) == "__get__"), None)
        if entry is not None and getter is not None and returns_new_object(getter.body):
            out.add(id(entry))
    return out


def _address_of_param(expr, params: Dict[str, int]) -> Optional[int]:
    """The index of the Python-object parameter whose address or buffer ``expr`` is
    (``<PyObject*>obj``, ``<char*>obj``, a bytes -> char* conversion of ``obj``)."""
    node = unwrap(expr, keep_from_py=True)
    if cls(node) not in ("CoerceFromPyTypeNode", "TypecastNode") or not is_pointer(getattr(node, "type", None)):
        return None
    inner = unwrap(getattr(node, "arg", None) or node.operand)
    return params.get(inner.name) if cls(inner) == "NameNode" else None


def _derived_from(expr, params: Dict[str, int]) -> Optional[int]:
    """The index of the Python-object parameter a returned pointer is derived from: its
    address or buffer, a field reached through it, or what a C function returns when handed
    that address (``font_of(<PyObject*>obj)``). A call that is passed the object itself (not
    its address) makes a new thing and is not followed."""
    node = unwrap(expr, keep_from_py=True)
    for _ in range(20):
        k = _address_of_param(node, params)
        if k is not None:
            return k
        name = cls(node)
        if name in ("AttributeNode", "IndexNode"):
            node = unwrap(getattr(node, "obj", None) or node.base, keep_from_py=True)
        elif name in _CALLS:
            return next((k for k in (_address_of_param(a, params) for a in getattr(node, "args", None) or [])
                         if k is not None), None)
        else:
            return None
    return None


def pointer_returning_functions(root) -> Dict[int, Set[int]]:
    """ids of the entries of this module's cdef functions that return a pointer derived from a
    Python-object parameter, with the indices of those parameters."""
    out: Dict[int, Set[int]] = {}
    for n in _core.walk(root):
        if cls(n) != "CFuncDefNode":
            continue
        ftype = getattr(n, "type", None)
        if not is_pointer(getattr(ftype, "return_type", None)):
            continue
        params = {a.name: i for i, a in enumerate(getattr(ftype, "args", None) or [])
                  if getattr(getattr(a, "type", None), "is_pyobject", False) and a.name}
        if not params:
            continue
        hits = set()
        for r in _core.walk(n.body, _core.FUNCTION_NODES):
            if cls(r) == "ReturnStatNode" and getattr(r, "value", None) is not None:
                k = _derived_from(r.value, params)
                if k is not None:
                    hits.add(k)
        if hits and getattr(n, "entry", None) is not None:
            out[id(n.entry)] = hits
    return out


def temporary_arguments(call, positions: Iterable[int]):
    """The arguments of ``call`` at ``positions`` that are temporaries."""
    args = list(getattr(call, "args", None) or [])
    for k in sorted(positions):
        if k < len(args) and creates_object(args[k]):
            yield k, args[k]
