"""Syntax-only mode (``--no-types``, and ``.pxd`` files): Cython's parser and
the declarations written in the file, no cimport resolution.

A verdict is given only where the declarations say enough: an untyped or
``object`` parameter, a ``cdef bytes``, a ``cdef void*``. Names the file does
not declare (globals, imports) give CYP000; a local assigned from a call, whose
type Cython might infer, gives at most an unverified warning.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional

from mltools.cythoncheck import _core
from mltools.cythoncheck.ctypenames import is_object_struct_name, why_narrow
from mltools.cythoncheck._core import (C_VALUE, GENERIC, INFERRED, NDARRAY, PYARRAY, PYINT, TEXT,
                                       TYPED_OBJECT, UNRESOLVED, FindingSink, cls, unwrap)

_NARROW_INTS = frozenset({"int8_t", "int16_t", "int32_t", "uint8_t", "uint16_t", "uint32_t"})


@dataclass
class Decl:
    kind: str
    ptr_depth: int = 0
    base_name: Optional[str] = None
    is_arg: bool = False
    is_def_arg: bool = False
    not_none: bool = False
    strided_view: bool = False


def _declarator_name_and_depth(decl):
    depth = 0
    for _ in range(20):
        name = cls(decl)
        if name in ("CPtrDeclaratorNode", "CReferenceDeclaratorNode", "CArrayDeclaratorNode"):
            depth += 1
            decl = decl.base
        elif name == "CConstDeclaratorNode":
            decl = decl.base
        elif name == "CFuncDeclaratorNode":
            decl = decl.base
        else:
            return getattr(decl, "name", None) or "", depth
    return "", depth


def _view_is_strided(base_type) -> bool:
    axes = getattr(base_type, "axes", None) or []
    steps = [getattr(a, "step", None) for a in axes]
    if not steps:
        return False
    for s in (steps[0], steps[-1]):
        s = unwrap(s) if s is not None else None
        if s is not None and cls(s) != "NoneNode":
            return False    # '::1' or a layout name: contiguous (or not ours to judge)
    return True


def _decl_from(base_type, declarator, *, is_arg=False, is_def_arg=False, not_none=False,
               annotation=None) -> Decl:
    name, depth = _declarator_name_and_depth(declarator) if declarator is not None else ("", 0)
    bt = base_type
    while cls(bt) in ("CConstTypeNode", "CConstOrVolatileTypeNode", "CQualifierTypeNode"):
        bt = bt.base_type
    d = Decl(TYPED_OBJECT, depth, None, is_arg, is_def_arg, not_none)
    if cls(bt) == "MemoryViewSliceTypeNode":
        d.kind = C_VALUE
        d.strided_view = depth == 0 and _view_is_strided(bt)
        return d
    if cls(bt) != "CSimpleBaseTypeNode":
        return d
    bname = getattr(bt, "name", None)
    d.base_name = bname
    if depth:
        d.kind = C_VALUE
        return d
    if annotation is not None and (bname is None or not name):
        ann = unwrap(getattr(annotation, "expr", annotation))
        aname = getattr(ann, "name", None) if cls(ann) == "NameNode" else None
        d.kind = {"object": GENERIC, "int": PYINT, "bytes": TEXT, "str": TEXT,
                  "bytearray": TEXT}.get(aname, TYPED_OBJECT)
        return d
    if getattr(bt, "is_basic_c_type", False):
        d.kind = C_VALUE
        return d
    if bname in _NARROW_INTS:
        d.kind = C_VALUE
        return d
    if bname is None or bname == "object" or (is_arg and not name and not bt.module_path):
        d.kind = GENERIC    # `def f(a)` parses as a base type name with an empty declarator
        return d
    if bname in ("bytes", "str", "unicode", "bytearray"):
        d.kind = TEXT
    elif bname == "ndarray":
        d.kind = NDARRAY
    elif bname == "array" and list(getattr(bt, "module_path", []) or []) == ["array"]:
        d.kind = PYARRAY
    return d


def _narrow_int_name(bt) -> Optional[str]:
    """The spelled name of an integer base type that cannot hold a pointer everywhere (int,
    short, char, long, Py_ssize_t, 8-32-bit typedefs), or None."""
    bname = getattr(bt, "name", None)
    if bname in _NARROW_INTS:
        return bname
    if bname == "Py_ssize_t":
        return bname
    if not getattr(bt, "is_basic_c_type", False) or bname not in ("int", "short", "char"):
        return None
    longness = getattr(bt, "longness", 0)
    if longness > 1:
        return None          # long long
    name = {-1: "short", -2: "short", 1: "long"}.get(longness, bname)
    return ("unsigned " + name) if getattr(bt, "signed", 1) == 0 else name


def _chain(node):
    """The nodes of an ``a.b[c].d()`` chain, outermost first."""
    for _ in range(50):
        yield node
        name = cls(node)
        if name == "AttributeNode":
            node = unwrap(node.obj)
        elif name in ("IndexNode", "SliceIndexNode"):
            node = unwrap(node.base)
        elif name in ("SimpleCallNode", "GeneralCallNode"):
            node = unwrap(node.function)
        else:
            return


def _arg_name(arg) -> str:
    name, _ = _declarator_name_and_depth(arg.declarator)
    if not name and cls(arg.base_type) == "CSimpleBaseTypeNode" and not getattr(arg.base_type, "is_basic_c_type", 0):
        return arg.base_type.name or ""
    return name


def _var_decls(node) -> Dict[str, Decl]:
    out = {}
    for d in getattr(node, "declarators", None) or []:
        name, _ = _declarator_name_and_depth(d)
        if name:
            out[name] = _decl_from(node.base_type, d)
    return out


class _Scope:
    def __init__(self, decls: Dict[str, Decl], facts: _core.FunctionFacts, is_def: bool,
                 class_attrs: Optional[Dict[str, Decl]] = None):
        self.decls = decls
        self.facts = facts
        self.is_def = is_def
        self.class_attrs = class_attrs or {}


def _collect_local_decls(body) -> Dict[str, Decl]:
    out: Dict[str, Decl] = {}
    for n in _core.walk(body):
        if cls(n) == "CVarDefNode":
            out.update(_var_decls(n))
    return out


def _object_layouts(root) -> set:
    """Names of the structs this file declares as a Python object's layout: a first member of
    type PyObject, or named as an extension type's object struct (``[object name]``)."""
    structs, objects = {}, set()
    for n in _core.walk(root, frozenset({"DefNode", "CFuncDefNode", "LambdaNode"})):
        name = cls(n)
        if name == "CStructOrUnionDefNode":
            first = next(iter(getattr(n, "attributes", None) or []), None)
            bt = getattr(first, "base_type", None)
            starts_with_object = getattr(bt, "name", None) in ("PyObject", "PyVarObject") and \
                _declarator_name_and_depth(first.declarators[0])[1] == 0 if first is not None else False
            structs[n.name] = (getattr(n, "cname", None) or n.name, starts_with_object)
        elif name == "CClassDefNode" and getattr(n, "objstruct_name", None):
            objects.add(n.objstruct_name)
    return {sname for sname, (cname, head) in structs.items() if head or cname in objects or sname in objects}


class SyntaxWalker:
    def __init__(self, sink: FindingSink):
        self.sink = sink
        self.scopes: List[_Scope] = []
        self.class_attrs: List[Dict[str, Decl]] = []

    def run(self, root) -> None:
        self.layouts = _object_layouts(root)
        self.low_bits: set = set()
        module_decls: Dict[str, Decl] = {}
        top = getattr(root, "body", None)
        stats = getattr(top, "stats", None) or ([top] if top is not None else [])
        for s in stats:
            if cls(s) == "CVarDefNode":
                module_decls.update(_var_decls(s))
        self.scopes.append(_Scope(module_decls, _core.gather_facts(root), False))
        self._visit(root)

    # --- scopes -------------------------------------------------------------
    def _lookup(self, name: str) -> Optional[Decl]:
        for scope in reversed(self.scopes):
            if name in scope.decls:
                return scope.decls[name]
        return None

    @property
    def scope(self) -> _Scope:
        return self.scopes[-1]

    def _visit(self, node) -> None:
        name = cls(node)
        pushed = False
        if name in ("DefNode", "LambdaNode", "CFuncDefNode") and getattr(node, "body", None) is not None:
            args = node.args if name != "CFuncDefNode" else getattr(node.declarator, "args", [])
            decls = {}
            in_cdef_class = bool(self.class_attrs) and name != "LambdaNode"
            for i, a in enumerate(args or []):
                an = _arg_name(a)
                if an and i == 0 and in_cdef_class and an == "self":
                    decls[an] = Decl(TYPED_OBJECT, is_arg=True)
                elif an:
                    decls[an] = _decl_from(a.base_type, a.declarator, is_arg=True,
                                           is_def_arg=name != "CFuncDefNode",
                                           not_none=bool(getattr(a, "not_none", False)),
                                           annotation=getattr(a, "annotation", None))
            decls.update(_collect_local_decls(node.body))
            self.scopes.append(_Scope(decls, _core.gather_facts(node.body), name != "CFuncDefNode",
                                      self.class_attrs[-1] if self.class_attrs else None))
            pushed = True
        elif name == "CClassDefNode":
            attrs = {}
            for n in _core.walk(node.body) if node.body is not None else ():
                if cls(n) == "CVarDefNode":
                    attrs.update(_var_decls(n))
            self.class_attrs.append(attrs)
        _core.dispatch(self, node, name)
        for child in _core.children(node):
            self._visit(child)
        if pushed:
            self.scopes.pop()
        elif name == "CClassDefNode":
            self.class_attrs.pop()

    # --- operand kinds ------------------------------------------------------
    def _name_kind(self, name: str) -> str:
        d = self._lookup(name)
        if d is not None:
            return d.kind
        if name == "self" and self.class_attrs:
            return TYPED_OBJECT
        for scope in reversed(self.scopes):
            rhss = scope.facts.assigned.get(name)
            if rhss:
                kinds = {self._rhs_kind(r) for r in rhss}
                if kinds == {C_VALUE}:
                    return C_VALUE
                if INFERRED in kinds or scope is self.scopes[0]:
                    return INFERRED
                return GENERIC
        return UNRESOLVED

    def _rhs_kind(self, rhs) -> str:
        rhs = unwrap(rhs)
        name = cls(rhs)
        if name == "TypecastNode":
            bt = getattr(rhs, "base_type", None)
            return GENERIC if getattr(bt, "name", None) == "object" else C_VALUE
        if name in ("AttributeNode", "IndexNode", "IntNode", "FloatNode", "UnicodeNode", "BytesNode",
                    "StringNode", "NoneNode", "ListNode", "TupleNode", "DictNode"):
            return GENERIC
        return INFERRED

    def classify(self, operand):
        operand = unwrap(operand)
        if any(cls(n) in ("SimpleCallNode", "GeneralCallNode") for n in _chain(operand)):
            # Cython rejects casting a temporary Python object to a pointer, so a
            # call here returns (or an attribute of it is) a C value.
            return C_VALUE, None, False
        root = _core.root_name(operand)
        if root is None:
            return TYPED_OBJECT, None, False
        decl = self._lookup(root.name)
        anchored = bool(decl is not None and decl.is_arg and decl.kind == GENERIC)
        if operand is root:
            return self._name_kind(root.name), root.name, anchored
        kind = self._name_kind(root.name)
        if kind in (GENERIC, INFERRED, UNRESOLVED):
            return kind, root.name, anchored
        # An attribute of a typed root: only `self.attr` declared in the class is known.
        if root.name == "self" and cls(operand) == "AttributeNode" and unwrap(operand.obj) is root:
            attr = self.scope.class_attrs.get(operand.attribute)
            if attr is not None and attr.ptr_depth == 0:
                return attr.kind, None, False
        return TYPED_OBJECT, None, False

    def _pointer_target(self, cast):
        """(is_pointer, pointee name, text) of a cast's target type."""
        _, depth = _declarator_name_and_depth(cast.declarator) if cast.declarator is not None else ("", 0)
        bt = cast.base_type
        const = ""
        while cls(bt) in ("CConstTypeNode", "CConstOrVolatileTypeNode", "CQualifierTypeNode"):
            bt, const = bt.base_type, "const "
        bname = getattr(bt, "name", None) or "?"
        return depth > 0, bname, f"{const}{bname}" + "*" * depth, bt

    # --- rules --------------------------------------------------------------
    def on_TypecastNode(self, node) -> None:
        is_ptr, pointee, text, bt = self._pointer_target(node)
        operand = unwrap(node.operand)
        if is_ptr:
            if is_object_struct_name(pointee) or pointee in self.layouts:
                return
            kind, rname, anchored = self.classify(operand)
            if kind in (C_VALUE, TYPED_OBJECT):
                return
            if kind == TEXT and pointee in ("char", "unsigned char", "Py_UCS4", "Py_UNICODE"):
                return   # a conversion to the buffer, not an address cast
            if kind in (GENERIC, INFERRED, UNRESOLVED) and pointee == "char" and not _core.data_shape(operand) \
                    and not _core.address_shape(operand, self.scope.facts.assigned):
                return   # <char*>obj converts a bytes-like object
            _core.address_cast_verdict(self.sink, node, operand, kind, text, self.scope.facts,
                                       anchored=anchored, unresolved_name=rname)
            return
        bname = getattr(bt, "name", None)
        if bname == "object" and cls(operand) == "NameNode":
            d = self._lookup(operand.name)
            if d is not None and d.ptr_depth and not d.is_arg:
                rhss = self.scope.facts.assigned.get(operand.name, [])
                if any(cls(r) in ("SimpleCallNode", "GeneralCallNode")
                       and _core._call_name(r.function) not in _core._NEVER_NULL_CALLS for r in rhss) \
                        and operand.name not in self.scope.facts.null_checked:
                    self.sink.add(node.pos, "CYP007", f"<object>{operand.name}: '{operand.name}' comes "
                                  "from a C call and is never checked for NULL", anchored=True)
            return
        tname = _narrow_int_name(bt)
        if tname and self._is_c_pointer(operand) and id(node) not in self.low_bits:
            base = tname if getattr(bt, "is_basic_c_type", False) else "int"
            self.sink.add(node.pos, "CYP010", f"<{tname}>{_core.expr_text(operand)} keeps a pointer "
                          f"in {tname}, which {why_narrow(base)}", anchored=True)

    def _mark_low_bits(self, node) -> None:
        self.low_bits.update(_core.low_bits_casts(node, lambda n: cls(unwrap(n)) == "IntNode"))

    on_ModNode = _mark_low_bits
    on_IntBinopNode = _mark_low_bits

    def _is_c_pointer(self, expr) -> bool:
        expr = unwrap(expr)
        if cls(expr) == "TypecastNode":
            return self._pointer_target(expr)[0]
        if cls(expr) == "NameNode":
            d = self._lookup(expr.name)
            return bool(d is not None and d.ptr_depth > 0)
        if cls(expr) == "AttributeNode" and cls(unwrap(expr.obj)) == "NameNode" and unwrap(expr.obj).name == "self":
            d = self.scope.class_attrs.get(expr.attribute)     # a cdef attribute of this class
            return bool(d is not None and d.ptr_depth > 0)
        return False

    def _is_void_ptr(self, expr) -> bool:
        expr = unwrap(expr)
        if cls(expr) == "NameNode":
            d = self._lookup(expr.name)
            return bool(d is not None and d.ptr_depth == 1 and d.base_name == "void")
        if cls(expr) == "TypecastNode":
            is_ptr, pointee, text, _ = self._pointer_target(expr)
            return is_ptr and pointee == "void" and text.count("*") == 1
        return False

    def on_arith(self, node) -> None:
        if self._is_void_ptr(node.operand1) or self._is_void_ptr(node.operand2):
            self.sink.add(node.pos, "CYP011", f"'{node.operator}' on a void* "
                          f"({_core.expr_text(node.operand1)} {node.operator} "
                          f"{_core.expr_text(node.operand2)})", anchored=True)

    def on_InPlaceAssignmentNode(self, node) -> None:
        if node.operator in ("+", "-") and self._is_void_ptr(node.lhs):
            self.sink.add(node.pos, "CYP011", f"'{node.operator}=' on the void* "
                          f"'{_core.expr_text(node.lhs)}'", anchored=True)

    def on_AmpersandNode(self, node) -> None:
        operand = unwrap(node.operand)
        if cls(operand) != "IndexNode":
            return
        base = unwrap(operand.base)
        if cls(base) != "NameNode":
            return
        d = self._lookup(base.name)
        if d is not None and d.strided_view and base.name not in self.scope.facts.layout_checked:
            self.sink.add(node.pos, "CYP006", f"&{_core.expr_text(operand)} hands on a pointer into "
                          f"'{base.name}', a strided memoryview: C code reading consecutive "
                          "elements reads the wrong ones", anchored=True)

    def _data_coercion(self, pos, target_depth: int, rhs, target_text: str) -> None:
        rhs = unwrap(rhs)
        if target_depth == 0 or not _core.data_shape(rhs):
            return
        kind, rname, anchored = self.classify(unwrap(rhs.obj))
        root = _core.root_name(rhs)
        pos = root.pos if root is not None else pos
        if kind == GENERIC or kind == INFERRED:
            self.sink.add(pos, "CYP002", f"{target_text} from {_core.expr_text(rhs)}: "
                          f"'{_core.expr_text(rhs.obj)}' is a Python object, so .data is a buffer "
                          "object (a memoryview for numpy), not the array's memory",
                          severity=None if kind == GENERIC else _core.Severity.WARNING,
                          verified=kind == GENERIC, anchored=anchored)
        elif kind == UNRESOLVED:
            self.sink.add(pos, "CYP000", f"{target_text} from {_core.expr_text(rhs)} not verified: "
                          f"'{rname}' is not declared in this file", verified=False)

    def on_CVarDefNode(self, node) -> None:
        for d in getattr(node, "declarators", None) or []:
            inner = d
            while getattr(inner, "base", None) is not None and cls(inner) != "CNameDeclaratorNode":
                inner = inner.base
            default = getattr(inner, "default", None)
            if default is None:
                continue
            _, depth = _declarator_name_and_depth(d)
            self._data_coercion(default.pos, depth, default,
                                f"{getattr(node.base_type, 'name', '?')}" + "*" * depth)

    def on_SingleAssignmentNode(self, node) -> None:
        lhs = unwrap(node.lhs)
        if cls(lhs) != "NameNode":
            return
        d = self._lookup(lhs.name)
        if d is not None and d.ptr_depth and d.kind == C_VALUE:
            self._data_coercion(node.rhs.pos, d.ptr_depth, node.rhs,
                                f"{d.base_name or '?'}" + "*" * d.ptr_depth)

    def _ndarray_param(self, arr, pos, what: str) -> None:
        arr = unwrap(arr)
        if cls(arr) != "NameNode":
            return
        d = self.scope.decls.get(arr.name)
        if d is None or not d.is_def_arg or d.kind != NDARRAY or d.not_none:
            return
        if arr.name in self.scope.facts.none_checked:
            return
        self.sink.add(arr.pos, "CYP013", f"{what} on the def parameter '{arr.name}', declared "
                      "without 'not None': a None argument is dereferenced", anchored=True)

    def on_AttributeNode(self, node) -> None:
        if node.attribute == "data":
            obj = unwrap(node.obj)
            if cls(obj) == "NameNode":
                self._ndarray_param(obj, node.pos, f"{obj.name}.data")

    def on_SimpleCallNode(self, node) -> None:
        fname = _core._call_name(node.function)
        args = list(getattr(node, "args", None) or [])
        if fname in ("PyArray_DATA", "PyArray_BYTES") and args:
            a = unwrap(args[0])
            if cls(a) == "NameNode":
                self._ndarray_param(a, node.pos, f"{fname}({a.name})")


_CONTEXTS: Dict[object, object] = {}


def _context(options):
    """One parse-only Cython Context per option set (it holds no per-file state we use)."""
    try:
        ctx = _CONTEXTS.get(options)
        key = options
    except TypeError:      # an unhashable compile-time value (a list from pyproject.toml)
        ctx = key = None
    if ctx is None:
        from Cython.Compiler import Main
        copts = Main.CompilationOptions(Main.default_options, include_path=list(options.include_dirs),
                                        language_level=3, cplus=options.cplus,
                                        compile_time_env=dict(options.compile_time_env))
        ctx = Main.Context.from_options(copts)
        if key is not None:
            _CONTEXTS[key] = ctx
    return ctx


def check_file_syntax(path: str, options):
    """Parse ``path`` (a .pyx, .pxd or .pxi) and run the syntax rules."""
    from Cython.Compiler import Errors, Main
    from Cython.Compiler.Scanning import FileSourceDescriptor
    from Cython.Compiler.Symtab import ModuleScope

    from mltools.cythoncheck.typed import FileResult, held_errors, is_fatal_parse_message

    ctx = _context(options)
    abspath = os.path.abspath(path)
    desc = FileSourceDescriptor(abspath, path)
    module_name = os.path.splitext(os.path.basename(path))[0].replace("-", "_") or "m"
    result = FileResult()
    tree = None
    fatal = None
    with held_errors() as held:
        try:
            scope = ModuleScope(module_name, parent_module=None, context=ctx)
            tree = ctx.parse(desc, scope, pxd=path.endswith(".pxd"), full_module_name=module_name)
        except Errors.CompileError as exc:
            fatal = exc
    fatal_held = [e for e in held if is_fatal_parse_message(e)]
    if fatal is not None or fatal_held:
        e = fatal_held[0] if fatal_held else fatal
        result.parse_error = (getattr(e, "position", None), getattr(e, "message_only", str(e)))
        return result
    sink = FindingSink()
    SyntaxWalker(sink).run(tree)
    result.findings = sink.findings
    return result
