"""What the typed and the syntax-only checkers share: expression shapes,
per-function evidence (keep-alives, NULL checks, assignments) and the rule
logic for a cast from a Python object to a pointer.

Both modes walk Cython parse trees (the typed one after type analysis, where
coercion nodes wrap expressions; ``unwrap`` sees through them). Node classes
are looked up by name so that the module works across Cython 3.x releases.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Set

from mltools.cythoncheck.rules import RULES
from mltools.findings import Severity

# Attribute names that, on a generic Python object, almost always hold an address.
ADDRESS_ATTRS = frozenset({"ptr", "data_ptr", "address", "addr", "handle", "pointer", "value"})
_ADDRESS_TOKENS = frozenset({"ptr", "addr", "address", "handle", "pointer", "pointers", "ptrs", "addrs"})
# Destinations that mark a C user-data slot: the object is a deliberate handle.
_USER_DATA_TOKENS = frozenset({"data", "ctx", "context", "userdata", "udata", "user", "arg", "args",
                               "opaque", "closure", "cookie", "payload", "priv", "private"})
# C functions that return a borrowed PyObject* that is never NULL for valid input.
_NEVER_NULL_CALLS = frozenset({"PyTuple_GET_ITEM", "PyList_GET_ITEM", "PySequence_Fast_GET_ITEM",
                               "Py_TYPE", "PyTuple_GetItem", "PyList_GetItem"})
_KEEP_ALIVE_METHODS = frozenset({"append", "add", "insert", "appendleft", "setdefault", "extend"})

# Operand kinds (what the Python operand of a pointer cast is).
C_VALUE = "c"                 # not a Python object
GENERIC = "object"            # untyped / `object`
PYINT = "int"                 # typed Python int
TEXT = "text"                 # bytes, bytearray, str
NDARRAY = "ndarray"
PYARRAY = "array.array"
TYPED_OBJECT = "typed"        # extension type or builtin container: a deliberate handle
UNRESOLVED = "unresolved"     # its type did not resolve (typed mode) / is unknown (syntax mode)
INFERRED = "inferred"         # syntax mode: a local that Cython may infer a type for


def cls(node) -> str:
    return type(node).__name__


_WRAPPERS = frozenset({"CoerceToPyTypeNode", "CoerceToTempNode", "CloneNode", "ProxyNode",
                       "NoneCheckNode", "PyTypeTestNode", "CoerceToBooleanNode", "CastNode",
                       "CoerceToMemViewSliceNode", "CoerceFromPyTypeNode", "ResultRefNode",
                       "CoerceToComplexNode", "CppOptionalTempCoercion", "PyTempNode"})


def unwrap(node, keep_from_py: bool = False):
    """The expression under Cython's coercion and temp wrappers."""
    for _ in range(50):
        name = cls(node)
        if name not in _WRAPPERS or (keep_from_py and name == "CoerceFromPyTypeNode"):
            return node
        inner = getattr(node, "arg", None) or getattr(node, "expression", None)
        if inner is None:
            return node
        node = inner
    return node


def children(node):
    for attr in getattr(node, "child_attrs", ()) or ():
        value = getattr(node, attr, None)
        if value is None:
            continue
        if isinstance(value, list):
            for v in value:
                if v is not None and hasattr(v, "child_attrs"):
                    yield v
        elif hasattr(value, "child_attrs"):
            yield value


# Nodes that open a new function body (their facts are gathered separately).
FUNCTION_NODES = frozenset({"DefNode", "CFuncDefNode", "LambdaNode", "GeneratorExpressionNode",
                            "FusedCFuncDefNode", "GeneratorBodyDefNode", "AsyncDefNode", "AsyncGenNode",
                            "PyClassDefNode", "CClassDefNode"})


def dispatch(visitor, node, name: str) -> None:
    """Call ``visitor.on_<NodeClass>(node)``, or ``on_arith`` for pointer arithmetic nodes:
    the one dispatch of the syntax and the typed checkers."""
    handler = getattr(visitor, "on_" + name, None)
    if handler is not None:
        handler(node)
    elif name in ("AddNode", "SubNode"):
        visitor.on_arith(node)


def walk(node, stop_at=frozenset()):
    """Every node under ``node`` once; nodes whose class is in ``stop_at`` are
    yielded but not entered (except ``node`` itself)."""
    stack = [node]
    seen = set()
    while stack:
        n = stack.pop()
        if id(n) in seen:   # CloneNode and friends share subtrees
            continue
        seen.add(id(n))
        yield n
        if n is not node and cls(n) in stop_at:
            continue
        stack.extend(children(n))


def string_value(node) -> Optional[str]:
    node = unwrap(node)
    if cls(node) in ("UnicodeNode", "StringNode", "BytesNode", "IdentifierStringNode"):
        v = getattr(node, "value", None)
        if isinstance(v, bytes):
            return v.decode("latin-1")
        return str(v) if v is not None else None
    return None


def root_name(node):
    """The NameNode an expression like ``a.b[c].d()`` starts from, or None."""
    node = unwrap(node)
    for _ in range(50):
        name = cls(node)
        if name == "NameNode":
            return node
        if name == "AttributeNode":
            node = unwrap(node.obj)
        elif name in ("IndexNode", "MemoryViewIndexNode", "BufferIndexNode", "SliceIndexNode"):
            node = unwrap(node.base)
        elif name in ("SimpleCallNode", "GeneralCallNode", "PythonCapiCallNode"):
            node = unwrap(node.function)
        else:
            return None
    return None


def expr_key(node) -> Optional[str]:
    """``a`` or ``a.b.c`` for names and attribute chains, else None."""
    node = unwrap(node)
    name = cls(node)
    if name == "NameNode":
        return node.name
    if name == "AttributeNode":
        base = expr_key(node.obj)
        return f"{base}.{node.attribute}" if base else None
    return None


def expr_text(node, depth: int = 0) -> str:
    """Source-like text of an expression, for messages."""
    node = unwrap(node)
    name = cls(node)
    if depth > 8:
        return "..."
    if name == "NameNode":
        return node.name
    if name == "AttributeNode":
        return f"{expr_text(node.obj, depth + 1)}.{node.attribute}"
    if name in ("IndexNode", "MemoryViewIndexNode", "BufferIndexNode"):
        idx = getattr(node, "index", None)
        if idx is None:
            indices = getattr(node, "indices", None) or []
            idx = indices[0] if len(indices) == 1 else None
        s = string_value(idx) if idx is not None else None
        inner = repr(s) if s is not None else (getattr(unwrap(idx), "value", None) if idx is not None else None) or "..."
        return f"{expr_text(node.base, depth + 1)}[{inner}]"
    if name in ("SimpleCallNode", "GeneralCallNode"):
        fn = node.function
        if cls(fn) == "NameNode" and fn.name == "data" and getattr(node, "args", None):
            return f"{expr_text(node.args[0], depth + 1)}.data"   # numpy's inlined .data property
        return f"{expr_text(fn, depth + 1)}(...)"
    if name == "TypecastNode":
        t = getattr(node, "type", None)          # typed mode; the parse tree has only base_type
        spelled = str(t).replace(" *", "*") if t is not None else "..."
        return f"<{spelled}>{expr_text(node.operand, depth + 1)}"
    if name == "IntNode":
        return str(node.value)
    return "(...)"


def low_bits_casts(node, is_constant) -> List[int]:
    """ids of the casts that ``node`` (``x % C``, ``x & C``) uses only for their low bits, as in
    ``<size_t>p % 16`` or ``<int>p & 7``: truncating the pointer there changes nothing."""
    if getattr(node, "operator", None) not in ("%", "&"):
        return []
    out = []
    for a, b in ((node.operand1, node.operand2), (node.operand2, node.operand1)):
        if cls(unwrap(a)) == "TypecastNode" and is_constant(b):
            out.append(id(unwrap(a)))
    return out


def _tokens(identifier: str) -> List[str]:
    return [t for t in re.split(r"_+", identifier.lower()) if t]


def _name_is_address_like(identifier: str) -> bool:
    toks = _tokens(identifier)
    return any(t in _ADDRESS_TOKENS or t.endswith("ptr") or t.endswith("addr") for t in toks)


def data_shape(node) -> bool:
    """``E.data`` (not ``E.ctypes.data``)."""
    node = unwrap(node)
    if cls(node) != "AttributeNode" or node.attribute != "data":
        return False
    obj = unwrap(node.obj)
    return not (cls(obj) == "AttributeNode" and obj.attribute == "ctypes")


def address_shape(node, assigned: Optional[Dict[str, list]] = None, depth: int = 0) -> Optional[str]:
    """Why ``node`` looks like a Python int holding an address, or None."""
    node = unwrap(node)
    name = cls(node)
    if name == "AttributeNode":
        attr = node.attribute
        obj = unwrap(node.obj)
        if attr == "data" and cls(obj) == "AttributeNode" and obj.attribute == "ctypes":
            return "'.ctypes.data' is an int address"
        if attr in ADDRESS_ATTRS or _name_is_address_like(attr):
            return f"attribute '.{attr}' holds an address"
        return None
    if name == "IndexNode":
        base = unwrap(node.base)
        if cls(base) == "IndexNode" and string_value(base.index) == "data":
            return "['data'][0] of an array interface is an int address"
        return None
    if name in ("SimpleCallNode", "GeneralCallNode"):
        fn = unwrap(node.function)
        if cls(fn) == "AttributeNode" and (fn.attribute in ADDRESS_ATTRS or _name_is_address_like(fn.attribute)):
            return f"'.{fn.attribute}()' returns an address"
        if cls(fn) == "NameNode" and fn.name in ("id", "addressof"):
            return f"'{fn.name}()' returns an int"
        return None
    if name == "NameNode":
        if _name_is_address_like(node.name):
            return f"the name '{node.name}' says it holds an address"
        if assigned and depth == 0:
            for rhs in assigned.get(node.name, ()):
                why = address_shape(rhs, None, depth + 1)
                if why:
                    return f"'{node.name}' is assigned from an address ({why})"
        return None
    return None


@dataclass
class FunctionFacts:
    """Evidence gathered once per function body (or the module body)."""
    incref: Set[str] = field(default_factory=set)
    stored: Set[str] = field(default_factory=set)
    kept_py: Set[str] = field(default_factory=set)     # typed mode: stored where a Python reference is kept
    layout_checked: Set[str] = field(default_factory=set)   # views whose strides or contiguity are tested
    null_checked: Set[str] = field(default_factory=set)
    none_checked: Set[str] = field(default_factory=set)
    assigned: Dict[str, list] = field(default_factory=dict)
    cast_dest: Dict[int, str] = field(default_factory=dict)


def _call_name(fn) -> Optional[str]:
    fn = unwrap(fn)
    if cls(fn) == "NameNode":
        return fn.name
    if cls(fn) == "AttributeNode":
        return fn.attribute
    return None


def _is_null(node) -> bool:
    node = unwrap(node)
    return cls(node) == "NullNode" or (cls(node) == "IntNode" and str(node.value) in ("0", "0L"))


def _is_none(node) -> bool:
    return cls(unwrap(node)) == "NoneNode"


def gather_facts(body) -> FunctionFacts:
    facts = FunctionFacts()
    if body is None:
        return facts
    for n in walk(body, FUNCTION_NODES):
        name = cls(n)
        if name in ("SimpleCallNode", "GeneralCallNode", "PythonCapiCallNode"):
            fname = _call_name(n.function)
            args = list(getattr(n, "args", None) or [])
            if name == "GeneralCallNode":
                pos = unwrap(getattr(n, "positional_args", None)) if getattr(n, "positional_args", None) else None
                args = list(getattr(pos, "args", None) or [])
            if fname in ("is_c_contig", "is_f_contig") and cls(unwrap(n.function)) == "AttributeNode":
                view = expr_key(unwrap(n.function).obj)
                if view:
                    facts.layout_checked.add(view)
            if fname and fname.endswith("INCREF"):
                facts.incref.update(k for k in (expr_key(a) for a in args) if k)
            elif fname in _KEEP_ALIVE_METHODS:
                keys = [k for k in (expr_key(a) for a in args) if k]
                facts.stored.update(keys)
                facts.kept_py.update(keys)
        elif name in ("SingleAssignmentNode", "CascadedAssignmentNode"):
            rhs = n.rhs
            lhss = [n.lhs] if name == "SingleAssignmentNode" else list(n.lhs_list)
            for lhs in lhss:
                lhs_u = unwrap(lhs)
                key = expr_key(rhs)
                if cls(lhs_u) in ("AttributeNode", "IndexNode") and key:
                    facts.stored.add(key)
                if key and _keeps_reference(lhs_u):
                    facts.kept_py.add(key)
                if cls(lhs_u) == "NameNode":
                    facts.assigned.setdefault(lhs_u.name, []).append(unwrap(rhs))
                dest = lhs_u.attribute if cls(lhs_u) == "AttributeNode" else (
                    lhs_u.name if cls(lhs_u) == "NameNode" else None)
                for cast in _casts_at_top(rhs):
                    if dest:
                        facts.cast_dest[id(cast)] = dest
        elif name in ("ForInStatNode", "ForFromStatNode", "AsyncForStatNode"):
            target = unwrap(getattr(n, "target", None)) if getattr(n, "target", None) is not None else None
            source = getattr(n, "iterator", None) or getattr(n, "bound1", None)
            if target is not None and cls(target) == "NameNode" and source is not None:
                facts.assigned.setdefault(target.name, []).append(source)
        elif name == "CVarDefNode":
            for d in getattr(n, "declarators", None) or []:
                inner = d
                while getattr(inner, "base", None) is not None and cls(inner) != "CNameDeclaratorNode":
                    inner = inner.base
                default = getattr(inner, "default", None)
                if default is not None and getattr(inner, "name", None):
                    facts.assigned.setdefault(inner.name, []).append(unwrap(default))
        elif name in ("PrimaryCmpNode", "CascadedCmpNode"):
            a, b = getattr(n, "operand1", None), getattr(n, "operand2", None)
            if a is None or b is None:
                continue
            for x, y in ((a, b), (b, a)):
                k = expr_key(x)
                if k and _is_null(y):
                    facts.null_checked.add(k)
                if k and _is_none(y):
                    facts.none_checked.add(k)
                view = _strides_of(x)
                if view:
                    facts.layout_checked.add(view)
        elif name in ("IfClauseNode", "WhileStatNode", "AssertStatNode", "CondExprNode"):
            cond = getattr(n, "condition", None) or getattr(n, "test", None) or getattr(n, "cond", None)
            _note_truth_tests(cond, facts)
        elif name in ("NotNode", "BoolBinopNode", "CoerceToBooleanNode"):
            for c in (getattr(n, "operand", None), getattr(n, "operand1", None),
                      getattr(n, "operand2", None), getattr(n, "arg", None)):
                _note_truth_tests(c, facts)
    return facts


def _strides_of(node) -> Optional[str]:
    """``v`` for ``v.strides[i]`` (a memoryview's stride, compared by a contiguity check)."""
    node = unwrap(node)
    if cls(node) not in ("IndexNode", "MemoryViewIndexNode"):
        return None
    base = unwrap(node.base)
    if cls(base) == "AttributeNode" and base.attribute == "strides":
        return expr_key(base.obj)
    return None


def _keeps_reference(lhs) -> bool:
    """Typed mode: assigning to ``lhs`` keeps a Python reference beyond this function (a Python
    attribute or item, or a module-level Python name)."""
    if not getattr(getattr(lhs, "type", None), "is_pyobject", False):
        return False
    name = cls(lhs)
    if name in ("AttributeNode", "IndexNode"):
        return True
    entry = getattr(lhs, "entry", None)
    return name == "NameNode" and entry is not None and not getattr(entry, "is_local", False) \
        and not getattr(entry, "is_arg", False)


def _note_truth_tests(cond, facts: FunctionFacts) -> None:
    if cond is None:
        return
    cond = unwrap(cond)
    if cls(cond) == "NotNode":
        cond = unwrap(cond.operand)
    k = expr_key(cond)
    if k:
        facts.null_checked.add(k)
        facts.none_checked.add(k)


def _casts_at_top(rhs):
    node = unwrap(rhs)
    while cls(node) == "TypecastNode":
        yield node
        node = unwrap(node.operand)


def keep_alive(cast, operand, facts: Optional[FunctionFacts]) -> bool:
    """Evidence that ``<void*>operand`` is a deliberate handle to a live object."""
    if facts is None:
        return False
    key = expr_key(operand)
    if key and (key in facts.incref or key in facts.stored):
        return True
    if key == "self":
        return True
    dest = facts.cast_dest.get(id(cast))
    if dest and any(t in _USER_DATA_TOKENS or t.endswith("ctx") or t.endswith("data")
                    for t in _tokens(dest)):
        return True
    return False


@dataclass
class RawFinding:
    """A finding before paths, noqa and selection are applied."""
    pos: tuple            # Cython (source descriptor, line, col0)
    code: str
    message: str
    severity: Severity
    verified: bool = True
    anchored: bool = False    # true when the root is an untyped parameter: holds even with unresolved cimports


class FindingSink:
    def __init__(self):
        self.findings: List[RawFinding] = []

    def add(self, pos, code: str, message: str, *, severity: Optional[Severity] = None,
            verified: bool = True, anchored: bool = False) -> None:
        if pos is None:
            return
        self.findings.append(RawFinding(pos, code, message, severity or RULES[code].severity,
                                        verified, anchored))


def address_cast_verdict(sink: FindingSink, cast, operand, kind: str, target: str,
                         facts: Optional[FunctionFacts], *, anchored: bool = False,
                         unresolved_name: Optional[str] = None) -> None:
    """The rules for ``<target>operand`` where operand is a Python object."""
    pos = cast.pos
    text = expr_text(operand)
    if kind == UNRESOLVED:
        what = f"the type of '{unresolved_name}'" if unresolved_name else "its type"
        sink.add(pos, "CYP000", f"<{target}>{text} not verified: {what} could not be resolved",
                 verified=False)
        return
    if kind == TEXT:
        sink.add(pos, "CYP003", f"<{target}>{text} points at the header of the str/bytes object, "
                 "not at its characters", anchored=anchored)
        return
    if kind in (NDARRAY, PYARRAY):
        if cls(unwrap(operand)) in ("NameNode", "AttributeNode"):
            sink.add(pos, "CYP005", f"<{target}>{text} is the address of the {kind} object, "
                     "not of its data", anchored=anchored)
        return
    if kind == PYINT:
        sink.add(pos, "CYP001", f"<{target}>{text} casts a Python int: the result is the int "
                 "object's address, not the address it holds", anchored=anchored)
        return
    if kind not in (GENERIC, INFERRED):
        return
    sev = Severity.WARNING if kind == INFERRED else None
    verified = kind != INFERRED
    if data_shape(operand):
        sink.add(pos, "CYP002", f"<{target}>{text}: '{text}' is a Python object, so .data is a "
                 "buffer object (a memoryview for numpy), not a pointer to the array's memory",
                 severity=sev, verified=verified, anchored=anchored)
        return
    why = address_shape(operand, facts.assigned if facts else None)
    if why:
        sink.add(pos, "CYP001", f"<{target}>{text} casts a Python object ({why}): the result is "
                 "the object's address, not the address it holds",
                 severity=sev, verified=verified, anchored=anchored)
        return
    if keep_alive(cast, operand, facts):
        return
    sink.add(pos, "CYP004", f"<{target}>{text} takes the address of a generic Python object "
             "that nothing here keeps alive: if it holds an address this is the wrong pointer, "
             "if it is a handle it may be freed", severity=Severity.WARNING, verified=verified,
             anchored=anchored)
