"""Typed mode: Cython's own pipeline up to AnalyseExpressionsTransform, then
one walk over the analysed tree holding every rule.

No C is generated. One ``Context`` is shared by all files with the same
options, so a cimported ``.pxd`` (numpy's, a project's own) is parsed once per
run instead of once per file.
"""
from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from mltools.cythoncheck import _core
from mltools.findings import Severity
from mltools.cythoncheck._core import (C_VALUE, GENERIC, NDARRAY, PYARRAY, PYINT, TEXT, TYPED_OBJECT,
                                       UNRESOLVED, FindingSink, cls, unwrap)

# Cython messages that mean a declaration could not be found or understood, so
# the types this file sees are incomplete (the findings become unverified).
_RESOLUTION_MARKERS = ("not found", "not a type identifier", "not declared", "Compile-time name",
                       "undeclared name", "c++ mode", "C++", "cppclass", "nknown type",
                       "has no attribute", "Invalid type", "not a valid type")


def is_fatal_parse_message(err) -> bool:
    """Held errors from the parser that leave the file's content unknown.

    Most held parser errors are about names declared elsewhere ('X' is not a
    type identifier in a .pxd meant to be included): those do not stop a check.
    """
    msg = getattr(err, "message_only", str(err))
    return "Compile-time name" in msg or "Expected" in msg or "Syntax error" in msg


class AnalysisStopped(Exception):
    """Cython's pipeline ended before the rules could run on the analysed tree."""


def _short(desc) -> str:
    path = getattr(desc, "filename", None) or str(desc)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


@dataclass(frozen=True)
class CythonOptions:
    include_dirs: Tuple[str, ...] = ()
    compile_time_env: Tuple[Tuple[str, object], ...] = ()
    cplus: bool = False


@dataclass
class FileResult:
    findings: List[_core.RawFinding] = field(default_factory=list)
    parse_error: Optional[Tuple[object, str]] = None        # (pos, message)
    semantic_errors: List[Tuple[object, str]] = field(default_factory=list)
    unresolved: Optional[str] = None                         # the first declaration Cython could not resolve


class ContextPool:
    """One Cython Context per option set, reused while module names stay distinct."""

    def __init__(self, options: CythonOptions):
        from Cython.Compiler import Main
        self._Main = Main
        self.options = options
        self.copts = Main.CompilationOptions(
            Main.default_options,
            include_path=list(options.include_dirs),
            language_level=3,
            cplus=options.cplus,
            compile_time_env=dict(options.compile_time_env),
            compiler_directives={"auto_pickle": False},
        )
        self._contexts: List[Tuple[object, set]] = []

    def context_for(self, module_name: str):
        for ctx, names in self._contexts:
            if module_name not in names:
                names.add(module_name)
                return ctx
        ctx = self._Main.Context.from_options(self.copts)
        self._contexts.append((ctx, {module_name}))
        return ctx

    def module_name(self, path: str) -> str:
        ctx = self._contexts[0][0] if self._contexts else self._Main.Context.from_options(self.copts)
        if not self._contexts:
            self._contexts.append((ctx, set()))
        name = ctx.extract_module_name(path, self.copts)
        # A file named like my-mod.pyx cannot be imported, but its code can still be checked.
        return ".".join(re.sub(r"\W", "_", part) or "_" for part in name.split("."))


def _source_object(Main, path: str, options, ctx, module_name: str):
    if hasattr(Main, "setup_source_object"):
        return Main.setup_source_object(path, os.path.splitext(path)[1] or ".pyx", module_name, options, ctx)
    # Cython 3.0 has no setup_source_object.
    from Cython.Compiler.Scanning import FileSourceDescriptor
    from Cython.Compiler.StringEncoding import EncodedString
    abspath = os.path.abspath(path)
    return Main.CompilationSource(FileSourceDescriptor(abspath, path), EncodedString(module_name), os.getcwd())


def check_file_typed(path: str, pool: ContextPool) -> FileResult:
    from Cython.Compiler import Errors, Pipeline
    from Cython.Compiler.ParseTreeTransforms import AnalyseExpressionsTransform
    from Cython.Compiler.Visitor import CythonTransform

    Main = pool._Main
    module_name = pool.module_name(path)
    ctx = pool.context_for(module_name)
    opts = pool.copts
    opts.configure_language_defaults("pyx")
    src = _source_object(Main, path, opts, ctx, module_name)
    res = Main.create_default_resultobj(src, opts)
    pipe = list(Pipeline.create_pyx_pipeline(ctx, opts, res))
    for i, phase in enumerate(pipe):
        if isinstance(phase, AnalyseExpressionsTransform):
            del pipe[i + 1:]
            break
    else:   # pragma: no cover - a Cython without this phase is outside the pinned range
        raise RuntimeError("Cython's pipeline has no AnalyseExpressionsTransform")

    result = FileResult()
    state = {"parse_failed": None, "held_after_parse": 0, "rules_ran": False}
    parse_phase = pipe[0]

    def parse(data):
        try:
            return parse_phase(data)
        except Errors.CompileError as exc:
            state["parse_failed"] = exc
            raise
        finally:
            state["held_after_parse"] = len(held)

    pipe[0] = parse
    sink = FindingSink()

    class RunRules(CythonTransform):
        def __call__(self, root):
            TypedWalker(sink, _undeclared_names(held)).run(root)
            state["rules_ran"] = True
            return root

    pipe.append(RunRules(ctx))

    Errors.init_thread()
    Errors.open_listing_file(None, echo_to_stderr=False)
    held = Errors.hold_errors()
    echo = io.StringIO()
    Errors.threadlocal.cython_errors_echo_file = echo   # warnings go only there
    try:
        err, _tree = Pipeline.run_pipeline(pipe, src, printtree=False)
    finally:
        Errors.release_errors(ignore=True)
        Errors.threadlocal.cython_errors_echo_file = None

    parse_errors = [e for e in held[:state["held_after_parse"]] if is_fatal_parse_message(e)]
    if state["parse_failed"] is not None or parse_errors:
        e = state["parse_failed"] or parse_errors[0]
        result.parse_error = (getattr(e, "position", None), getattr(e, "message_only", str(e)))
        return result
    if not state["rules_ran"]:
        # Cython stopped before type analysis finished (an error it treats as fatal).
        stop = err if err is not None else (held[0] if held else None)
        where = ""
        pos = getattr(stop, "position", None)
        if pos:
            where = f" at {_short(pos[0])}:{pos[1]}:{pos[2] + 1}"
        raise AnalysisStopped(f"Cython stopped{where}: {getattr(stop, 'message_only', stop)}")
    result.semantic_errors = [(getattr(e, "position", None), getattr(e, "message_only", str(e)))
                              for e in held]
    result.findings = sink.findings
    first = next(((pos, msg) for pos, msg in result.semantic_errors
                  if any(m in msg for m in _RESOLUTION_MARKERS)), None)
    if first is not None:
        pos, msg = first
        result.unresolved = (f"{_short(pos[0])}:{pos[1]}:{pos[2] + 1}: {msg}" if pos else msg)
        for f in result.findings:
            if f.code != "CYP000" and not f.anchored:
                f.verified = False
                if f.severity.rank > Severity.WARNING.rank:
                    f.severity = Severity.WARNING
    return result


_UNDECLARED = re.compile(r"undeclared name not builtin: (\w+)|'(\w+)' is not declared")


def _undeclared_names(held) -> set:
    names = set()
    for e in held:
        m = _UNDECLARED.search(getattr(e, "message_only", str(e)))
        if m:
            names.add(m.group(1) or m.group(2))
    return names


def _strip(t):
    """The type under typedefs and const/volatile."""
    for _ in range(20):
        if getattr(t, "is_typedef", False):
            t = t.typedef_base_type
        elif getattr(t, "is_cv_qualified", False) or getattr(t, "is_const", False):
            t = getattr(t, "cv_base_type", None) or getattr(t, "const_base_type", t)
        else:
            return t
    return t


def _is_void_ptr(t) -> bool:
    if t is None:
        return False
    t = _strip(t)
    return bool(getattr(t, "is_ptr", False) and getattr(_strip(t.base_type), "is_void", False))


def _is_ptr(t) -> bool:
    return bool(t is not None and getattr(_strip(t), "is_ptr", False))


def _is_narrow_int(t) -> bool:
    t = _strip(t)
    if not getattr(t, "is_int", False) or getattr(t, "is_enum", False):
        return False
    if getattr(t, "name", "") == "bint" or type(t).__name__ == "CBIntType":
        return False
    rank = getattr(t, "rank", None)
    return isinstance(rank, (int, float)) and rank < 3   # below long


def _entry_type(node):
    entry = getattr(node, "entry", None)
    return getattr(entry, "type", None) if entry is not None else None


def classify(expr, undeclared=frozenset()) -> Tuple[str, Optional[str]]:
    """The kind of a Python-object operand, and the name whose type is unresolved."""
    t = getattr(expr, "type", None)
    root = _core.root_name(expr)
    if root is not None and root.name in undeclared:
        return UNRESOLVED, root.name
    root_t = _entry_type(root) if root is not None else None
    if root_t is not None and getattr(root_t, "is_error", False):
        return UNRESOLVED, root.name
    if t is None or getattr(t, "is_error", False):
        return UNRESOLVED, (root.name if root is not None else None)
    if not getattr(t, "is_pyobject", False):
        return C_VALUE, None
    name = getattr(t, "name", "")
    if getattr(t, "is_builtin_type", False):
        if name in ("int", "long"):
            return PYINT, None
        if name in ("bytes", "bytearray", "str", "unicode", "basestring"):
            return TEXT, None
        return TYPED_OBJECT, None
    if getattr(t, "is_extension_type", False):
        mod = getattr(t, "module_name", "") or ""
        if name == "ndarray":
            return NDARRAY, None
        if name == "array" and mod in ("array", "cpython.array"):
            return PYARRAY, None
        return TYPED_OBJECT, None
    if name == "object" or str(t) == "Python object":
        return GENERIC, None
    return TYPED_OBJECT, None


_FUNC_NODES = ("DefNode", "CFuncDefNode", "LambdaNode", "GeneratorExpressionNode", "PyCFunctionNode",
               "FusedCFuncDefNode", "GeneratorBodyDefNode", "AsyncDefNode", "AsyncGenNode")


class TypedWalker:
    def __init__(self, sink: FindingSink, undeclared=frozenset()):
        self.sink = sink
        self.undeclared = undeclared
        self.facts_stack: List[_core.FunctionFacts] = []
        self.def_stack: List[object] = []

    @property
    def facts(self) -> Optional[_core.FunctionFacts]:
        return self.facts_stack[-1] if self.facts_stack else None

    def run(self, root) -> None:
        self.facts_stack.append(_core.gather_facts(root))
        self._visit(root, set())

    def _visit(self, node, seen: set) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        name = cls(node)
        is_func = name in _FUNC_NODES and getattr(node, "body", None) is not None
        if is_func:
            self.facts_stack.append(_core.gather_facts(node.body))
            self.def_stack.append(node if name in ("DefNode", "LambdaNode") else None)
        _core.dispatch(self, node, name)
        for child in _core.children(node):
            self._visit(child, seen)
        if is_func:
            self.facts_stack.pop()
            self.def_stack.pop()

    # --- casts -------------------------------------------------------------
    def on_TypecastNode(self, node) -> None:
        target = getattr(node, "type", None)
        if target is None:
            return
        raw = node.operand
        operand = unwrap(raw)
        op_t = getattr(operand, "type", None)
        if _is_ptr(target):
            if cls(raw) == "CoerceFromPyTypeNode" or cls(unwrap(raw, keep_from_py=True)) == "CoerceFromPyTypeNode":
                return   # a conversion (e.g. <char*>bytes), see on_CoerceFromPyTypeNode
            if op_t is not None and (getattr(op_t, "is_pyobject", False) or getattr(op_t, "is_error", False)):
                pointee = str(_strip(target).base_type)
                if _core.is_pyobject_pointee(pointee):
                    return
                kind, unresolved = classify(operand, self.undeclared)
                anchored = kind in (PYINT, TEXT, NDARRAY, PYARRAY) or self._anchored(operand)
                _core.address_cast_verdict(self.sink, node, operand, kind, str(target).replace(" *", "*"),
                                           self.facts, anchored=anchored,
                                           unresolved_name=unresolved)
            return
        if getattr(target, "is_pyobject", False) and _is_ptr(op_t):
            self._null_object_cast(node, operand)
            return
        if _is_ptr(op_t) and _is_narrow_int(target):
            self.sink.add(node.pos, "CYP010", f"<{target}>{_core.expr_text(operand)} truncates a "
                          f"pointer to {target}", anchored=True)

    def _anchored(self, operand) -> bool:
        root = _core.root_name(operand)
        entry = getattr(root, "entry", None) if root is not None else None
        if entry is None or not getattr(entry, "is_arg", False):
            return False
        t = entry.type
        return str(t) == "Python object" or getattr(t, "is_builtin_type", False)

    def _null_object_cast(self, node, operand) -> None:
        name = cls(operand)
        if name in ("SimpleCallNode", "PythonCapiCallNode"):
            fname = _core._call_name(operand.function)
            if fname in _core._NEVER_NULL_CALLS:
                return
            self.sink.add(node.pos, "CYP007", f"<object>{_core.expr_text(operand)}: the C call may "
                          "return NULL, and <object>NULL crashes", anchored=True)
            return
        if name == "NameNode" and self.facts is not None:
            entry = getattr(operand, "entry", None)
            if entry is not None and getattr(entry, "is_arg", False):
                return
            rhss = self.facts.assigned.get(operand.name, [])
            from_call = [r for r in rhss if cls(r) in ("SimpleCallNode", "PythonCapiCallNode")
                         and _core._call_name(r.function) not in _core._NEVER_NULL_CALLS]
            if from_call and operand.name not in self.facts.null_checked:
                self.sink.add(node.pos, "CYP007", f"<object>{operand.name}: '{operand.name}' comes "
                              "from a C call and is never checked for NULL", anchored=True)

    def on_CoerceFromPyTypeNode(self, node) -> None:
        t = getattr(node, "type", None)
        if not _is_ptr(t):
            return
        arg = unwrap(node.arg)
        if not _core.data_shape(arg):
            return
        kind, unresolved = classify(unwrap(arg.obj), self.undeclared)
        root = _core.root_name(arg)
        pos = root.pos if root is not None else node.pos
        if kind == UNRESOLVED:
            self.sink.add(pos, "CYP000", f"{t} from {_core.expr_text(arg)} not verified: the type "
                          f"of '{unresolved or _core.expr_text(arg.obj)}' could not be resolved",
                          verified=False)
        elif kind == GENERIC:
            self.sink.add(pos, "CYP002", f"{t} from {_core.expr_text(arg)}: "
                          f"'{_core.expr_text(arg.obj)}' is a Python object, so .data is a buffer "
                          "object (a memoryview for numpy), not the array's memory",
                          anchored=self._anchored(arg))

    # --- memoryviews, arithmetic, ndarray parameters ------------------------
    def on_AmpersandNode(self, node) -> None:
        operand = unwrap(node.operand)
        base = getattr(operand, "base", None)
        bt = getattr(base, "type", None) if base is not None else None
        if bt is None or not getattr(bt, "is_memoryviewslice", False):
            return
        if getattr(bt, "is_c_contig", False) or getattr(bt, "is_f_contig", False):
            return
        self.sink.add(node.pos, "CYP006", f"&{_core.expr_text(operand)} hands on a pointer into "
                      f"'{_core.expr_text(base)}', a strided memoryview ({bt}): C code reading "
                      "consecutive elements reads the wrong ones", anchored=True)

    def on_arith(self, node) -> None:
        t1 = getattr(node.operand1, "type", None)
        t2 = getattr(node.operand2, "type", None)
        if _is_void_ptr(t1) or _is_void_ptr(t2):
            self.sink.add(node.pos, "CYP011", f"'{node.operator}' on a void* "
                          f"({_core.expr_text(node.operand1)} {node.operator} "
                          f"{_core.expr_text(node.operand2)})", anchored=True)

    def on_InPlaceAssignmentNode(self, node) -> None:
        if node.operator in ("+", "-") and _is_void_ptr(getattr(node.lhs, "type", None)):
            self.sink.add(node.pos, "CYP011", f"'{node.operator}=' on the void* "
                          f"'{_core.expr_text(node.lhs)}'", anchored=True)

    def on_SimpleCallNode(self, node) -> None:
        fn = unwrap(node.function)
        fname = _core._call_name(fn)
        args = list(getattr(node, "args", None) or [])
        if not args or fname not in ("data", "PyArray_DATA", "PyArray_BYTES"):
            return
        if fname == "data" and cls(fn) != "NameNode":
            return
        arr = unwrap(args[0])
        if cls(arr) != "NameNode":
            return
        t = _entry_type(arr)
        if t is None or getattr(t, "name", "") != "ndarray":
            return
        defnode = self.def_stack[-1] if self.def_stack else None
        if defnode is None:
            return
        for a in getattr(defnode, "args", None) or []:
            aname = getattr(a, "name", None) or getattr(getattr(a, "declarator", None), "name", None)
            if aname == arr.name:
                if getattr(a, "not_none", False):
                    return
                if self.facts is not None and arr.name in self.facts.none_checked:
                    return
                what = f"{arr.name}.data" if fname == "data" else f"{fname}({arr.name})"
                self.sink.add(arr.pos, "CYP013", f"{what} on the def parameter '{arr.name}', declared "
                              "without 'not None': a None argument is dereferenced", anchored=True)
                return
