"""Typed mode: Cython's own pipeline up to AnalyseExpressionsTransform, then
one walk over the analysed tree holding every rule.

No C is generated. One ``Context`` is shared by the files a process checks,
so a cimported ``.pxd`` (numpy's, a project's own) is analysed once per
process instead of once per file; ``ContextPool`` and ``CheckContext`` keep
each file's result independent of the files checked before it.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from mltools.cythoncheck import _core, ctypenames, lifetime
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


# Phases of Cython's pipeline that change nothing the rules read: doctest dicts, signatures in
# docstrings, overflow-check marks.
_SKIPPED_PHASES = ("AutoTestDictTransform", "EmbedSignature", "MarkOverflowingArithmetic")


def _held_errors() -> Optional[list]:
    from Cython.Compiler import Errors
    stack = getattr(Errors.threadlocal, "cython_errors_stack", None)
    return stack[-1] if stack else None


def _drop_none_children(tree) -> None:
    """Remove the None entries a failed ``include`` leaves in statement lists.

    Cython's parser returns None for an include file it cannot find, after
    reporting "'X' not found". In a normal compile that error stops the run
    right after parsing (Context.parse compares the error count); with the
    errors held, as here, the count does not move, and the first transform
    trips over the None. Dropping it lets the rest of the file be analysed;
    the held error marks the file's findings unverified.
    """
    stack, seen = [tree], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for attr in getattr(node, "child_attrs", ()) or ():
            value = getattr(node, attr, None)
            if isinstance(value, list):
                if any(v is None for v in value):
                    value = [v for v in value if v is not None]
                    setattr(node, attr, value)
                stack.extend(value)
            elif value is not None and hasattr(value, "child_attrs"):
                stack.append(value)


def _merged(lists) -> list:
    """The errors of ``lists`` in order, each error object once."""
    out, seen = [], set()
    for errors in lists:
        for e in errors:
            if id(e) not in seen:
                seen.add(id(e))
                out.append(e)
    return out


_CONTEXT_CLASS = None


def _context_class():
    """Cython's Context with two additions that make a file's result independent of the files
    checked before it in the same context:

    * the errors Cython reports while loading a cimported .pxd are remembered on its module
      scope and charged to every later file that cimports it (Cython reports them only to the
      first one);
    * a failed include does not break the transforms (see _drop_none_children).
    """
    global _CONTEXT_CLASS
    if _CONTEXT_CLASS is not None:
        return _CONTEXT_CLASS
    from Cython.Compiler import Main

    class CheckContext(Main.Context):
        def find_module(self, *args, **kwargs):
            frames = self.__dict__.setdefault("_mltools_frames", [])
            held = _held_errors()
            start = len(held) if held is not None else 0
            frames.append([])
            try:
                scope = super().find_module(*args, **kwargs)
            finally:
                inner = frames.pop()
            if scope is None:
                return scope
            errors = scope.__dict__.get("_mltools_errors")
            if errors is None and getattr(scope, "pxd_file_loaded", False):
                # loaded by this call: what it reported, and what the modules it found carry
                errors = _merged([list(held[start:]) if held is not None else [], *inner])
                scope._mltools_errors = errors
            if errors and frames:
                frames[-1].append(errors)
            return scope

        def parse(self, *args, **kwargs):
            held = _held_errors()
            start = len(held) if held is not None else 0
            tree = super().parse(*args, **kwargs)
            if held is not None and len(held) > start:
                _drop_none_children(tree)
            return tree

    _CONTEXT_CLASS = CheckContext
    return CheckContext


class ContextPool:
    """The Cython Context of a run (one for .pyx/.pxi, one for pure-Python-mode .py files,
    whose language defaults differ): a cimported .pxd is analysed once per context.

    A file's own module scope is never taken from the context: an earlier file that
    cimported the module left its .pxd-only scope there, and analysing the .pyx into that
    scope loses declarations (fused functions lose their arguments). The scope is set aside
    while the file is checked and put back afterwards, so later files still see the .pxd
    alone.
    """

    def __init__(self, options: CythonOptions):
        from Cython.Compiler import Main
        self._Main = Main
        self.options = options
        self._modes = {}

    def _options(self, mode: str):
        Main = self._Main
        copts = Main.CompilationOptions(
            Main.default_options,
            include_path=list(self.options.include_dirs),
            language_level=3,
            cplus=self.options.cplus,
            compile_time_env=dict(self.options.compile_time_env),
            compiler_directives={"auto_pickle": False},
        )
        copts.configure_language_defaults(mode)
        return copts

    def context(self, mode: str = "pyx"):
        """(Context, CompilationOptions) for "pyx" or "py" sources."""
        if mode not in self._modes:
            copts = self._options(mode)
            self._modes[mode] = (_context_class().from_options(copts), copts)
        return self._modes[mode]

    def module_name(self, path: str) -> str:
        ctx, copts = self.context("pyx")
        name = ctx.extract_module_name(path, copts)
        # A file named like my-mod.pyx cannot be imported, but its code can still be checked.
        return ".".join(re.sub(r"\W", "_", part) or "_" for part in name.split("."))

    def warm_up(self) -> None:
        """Build what every file needs (the context, Cython's scanner tables) once, so that
        forked workers inherit it."""
        from Cython.Compiler import Scanning
        self.context("pyx")
        if hasattr(Scanning, "get_lexicon"):
            Scanning.get_lexicon()

    def preload(self, module_names) -> None:
        """Analyse the .pxd files of ``module_names`` now (before worker processes are forked,
        so that each does not analyse them again). Their errors are kept on their scopes and
        charged to the files that cimport them, as when a file loads them."""
        ctx, _copts = self.context("pyx")
        with held_errors():
            from Cython.Compiler.Scanning import FileSourceDescriptor
            for name in module_names:
                try:
                    # Only modules whose .pxd exists: a "not found" error would be placed here
                    # instead of at the cimport of the file that needs it.
                    path = ctx.find_pxd_file(name)
                    if path:
                        ctx.find_module(name, pos=(FileSourceDescriptor(path), 1, 0), need_pxd=1)
                except Exception:  # noqa: BLE001 - a file that cimports it will meet the same error
                    continue


def _module_table(ctx, dotted: str):
    """The dict that holds module ``dotted``'s scope (Context.modules or a package's
    module_entries) and the last name part, or (None, name) when a parent is missing."""
    parts = dotted.split(".")
    table = ctx.modules
    for part in parts[:-1]:
        scope = table.get(part)
        if scope is None:
            return None, parts[-1]
        table = scope.module_entries
    return table, parts[-1]


@contextlib.contextmanager
def held_errors():
    """For the block, Cython's errors are held, not reported: yields the list that holds them.
    Its warnings go to a private buffer (its echo file), never to our stderr."""
    from Cython.Compiler import Errors
    Errors.init_thread()
    Errors.open_listing_file(None, echo_to_stderr=False)
    held = Errors.hold_errors()
    Errors.threadlocal.cython_errors_echo_file = io.StringIO()
    try:
        yield held
    finally:
        Errors.release_errors(ignore=True)
        Errors.threadlocal.cython_errors_echo_file = None


@contextlib.contextmanager
def _own_module_scope(ctx, module_name: str):
    table, name = _module_table(ctx, module_name)
    saved = table.pop(name, None) if table is not None else None
    try:
        yield
    finally:
        table, name = _module_table(ctx, module_name)
        if table is not None:
            table.pop(name, None)
            if saved is not None:
                table[name] = saved


def _source_object(Main, path: str, options, ctx, module_name: str):
    if hasattr(Main, "setup_source_object"):
        return Main.setup_source_object(path, os.path.splitext(path)[1] or ".pyx", module_name, options, ctx)
    # Cython 3.0 has no setup_source_object.
    from Cython.Compiler.Scanning import FileSourceDescriptor
    from Cython.Compiler.StringEncoding import EncodedString
    abspath = os.path.abspath(path)
    return Main.CompilationSource(FileSourceDescriptor(abspath, path), EncodedString(module_name), os.getcwd())


def _error_key(err, main_path: str):
    """Order of a file's errors: its own (and its includes') first, by position; then those of
    the .pxd files it cimports, by file and position."""
    pos = getattr(err, "position", None)
    if not pos:
        return (2, "", 0, 0, getattr(err, "message_only", str(err)))
    path = getattr(pos[0], "filename", None) or str(pos[0])
    return (0 if path == main_path else 1, path, pos[1], pos[2], getattr(err, "message_only", str(err)))


def check_file_typed(path: str, pool: ContextPool) -> FileResult:
    from Cython.Compiler import Errors, Pipeline
    from Cython.Compiler.ParseTreeTransforms import AnalyseExpressionsTransform
    from Cython.Compiler.Visitor import CythonTransform

    Main = pool._Main
    mode = "py" if path.endswith(".py") else "pyx"
    ctx, opts = pool.context(mode)
    module_name = pool.module_name(path)
    src = _source_object(Main, path, opts, ctx, module_name)
    res = Main.create_default_resultobj(src, opts)
    pipe = [p for p in Pipeline.create_pyx_pipeline(ctx, opts, res, py=mode == "py")
            if type(p).__name__ not in _SKIPPED_PHASES]
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

    with held_errors() as held:
        frames = ctx.__dict__.setdefault("_mltools_frames", [])
        frames.append([])
        try:
            with _own_module_scope(ctx, module_name):
                err, _tree = Pipeline.run_pipeline(pipe, src, printtree=False)
        finally:
            cimported = frames.pop()

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
    errors = _merged([held, *cimported])
    errors.sort(key=lambda e: _error_key(e, os.path.abspath(path)))
    result.semantic_errors = [(getattr(e, "position", None), getattr(e, "message_only", str(e)))
                              for e in errors]
    first = next(((pos, msg) for pos, msg in result.semantic_errors
                  if any(m in msg for m in _RESOLUTION_MARKERS)), None)
    if first is None:
        # With declarations missing, a C function call reads as a Python call, and Cython's
        # complaints about temporaries are about that, not about the code.
        for pos, msg in result.semantic_errors:
            if pos and any(m in msg for m in lifetime.CYTHON_MESSAGES):
                sink.add(pos, "CYP020", f"Cython rejects this: {msg}", anchored=True)
    result.findings = sink.findings
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


def _is_void_ptr(t) -> bool:
    if t is None:
        return False
    _names, base = ctypenames.declared_names(t)
    if not getattr(base, "is_ptr", False):
        return False
    _names, pointee = ctypenames.declared_names(base.base_type)
    return bool(getattr(pointee, "is_void", False))


_is_ptr = ctypenames.is_pointer


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


def _is_constant(node) -> bool:
    """A literal, NULL, an enum member or a named constant: not an address held in a variable."""
    node = unwrap(node)
    name = cls(node)
    if name in ("IntNode", "NullNode", "BoolNode", "CharNode"):
        return True
    if name == "UnaryMinusNode":
        return _is_constant(node.operand)
    if name == "NameNode":
        entry = getattr(node, "entry", None)
        t = getattr(entry, "type", None)
        return bool(getattr(entry, "is_const", False) or getattr(t, "is_enum", False))
    return False


class TypedWalker:
    def __init__(self, sink: FindingSink, undeclared=frozenset()):
        self.sink = sink
        self.undeclared = undeclared
        self.facts_stack: List[_core.FunctionFacts] = []
        self.def_stack: List[object] = []
        self.func_stack: List[object] = []
        self._root = None
        self._object_structs = None
        self._fresh_properties = None
        self._pointer_functions = None
        self._low_bits: set = set()      # ids of casts whose result is only used for its low bits

    @property
    def facts(self) -> Optional[_core.FunctionFacts]:
        return self.facts_stack[-1] if self.facts_stack else None

    def run(self, root) -> None:
        self._root = root
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
            self.func_stack.append(node)
        _core.dispatch(self, node, name)
        for child in _core.children(node):
            self._visit(child, seen)
        if is_func:
            self.facts_stack.pop()
            self.def_stack.pop()
            self.func_stack.pop()

    # --- module-wide facts, computed on first use ----------------------------
    def object_structs(self) -> set:
        if self._object_structs is None:
            self._object_structs = ctypenames.object_struct_names([getattr(self._root, "scope", None)])
        return self._object_structs

    def fresh_properties(self) -> set:
        if self._fresh_properties is None:
            self._fresh_properties = lifetime.fresh_properties(self._root)
        return self._fresh_properties

    def pointer_functions(self) -> dict:
        if self._pointer_functions is None:
            self._pointer_functions = lifetime.pointer_returning_functions(self._root)
        return self._pointer_functions

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
                if ctypenames.is_object_layout(target, self.object_structs):
                    return   # a typed view of the object itself (PyDateTime_DateTime*, PyArray_Descr*)
                kind, unresolved = classify(operand, self.undeclared)
                anchored = kind in (PYINT, TEXT, NDARRAY, PYARRAY) or self._anchored(operand)
                _core.address_cast_verdict(self.sink, node, operand, kind, str(target).replace(" *", "*"),
                                           self.facts, anchored=anchored,
                                           unresolved_name=unresolved)
                return
            self._integer_to_pointer(node, target, operand, op_t)
            return
        if getattr(target, "is_pyobject", False) and _is_ptr(op_t):
            self._null_object_cast(node, operand)
            return
        if _is_ptr(op_t) and id(node) not in self._low_bits:
            found = ctypenames.narrow_int(target)
            if found:
                narrow, under = found
                why = ctypenames.why_narrow(under)
                self.sink.add(node.pos, "CYP010", f"<{narrow}>{_core.expr_text(operand)} keeps a pointer "
                              f"in {narrow}, which {why}", anchored=True)

    def _integer_to_pointer(self, node, target, operand, op_t) -> None:
        """<T*>i (CYP014) and the round trip <T*><I>p (CYP015)."""
        if op_t is None or _is_constant(operand):
            return
        if cls(operand) == "TypecastNode" and _is_ptr(getattr(unwrap(operand.operand), "type", None)):
            if ctypenames.narrow_int(op_t):
                return     # the inner cast is CYP010 already
            via = ctypenames.round_trip_name(op_t)
            if via:
                self.sink.add(node.pos, "CYP015", f"<{str(target).replace(' *', '*')}><{via}>"
                              f"{_core.expr_text(operand.operand)}: a pointer round trip through {via}, "
                              "which C does not promise to preserve a pointer", anchored=True)
            return
        found = ctypenames.narrow_int(op_t, llp64_only=True)
        if found:
            narrow, under = found
            why = ctypenames.why_narrow(under)
            self.sink.add(node.pos, "CYP014", f"<{str(target).replace(' *', '*')}>{_core.expr_text(operand)}: "
                          f"the address was kept in {narrow}, which {why}", anchored=True)

    def _mark_low_bits(self, node) -> None:
        self._low_bits.update(_core.low_bits_casts(node, _is_constant))

    on_ModNode = _mark_low_bits
    on_IntBinopNode = _mark_low_bits

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
        if self.facts is not None and _core.expr_key(base) in self.facts.layout_checked:
            return      # the function tests the view's strides (pandas: strides[1] == sizeof(T))
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
        self._call_with_temporary(node, fn)
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

    # --- pointers into objects that die (CYP020) ------------------------------
    def on_SingleAssignmentNode(self, node) -> None:
        self._stored_pointer(node.lhs, node.rhs)

    def on_CascadedAssignmentNode(self, node) -> None:
        for lhs in node.lhs_list:
            self._stored_pointer(lhs, node.rhs)

    def _stored_pointer(self, lhs, rhs) -> None:
        pos = (_core.root_name(lhs) or unwrap(lhs)).pos
        source = lifetime.pointer_source(rhs)
        if source is not None and lifetime.is_property_read(source) \
                and id(getattr(unwrap(source), "entry", None)) in self.fresh_properties():
            self.sink.add(pos, "CYP020", f"{_core.expr_text(lhs)} points into the value of the property "
                          f"{_core.expr_text(source)}, a new object on every read that dies at the end "
                          "of this statement", anchored=True)
            return
        if not lifetime.outlives_function(lhs):
            return
        owner = lifetime.owner_of(rhs, self.facts)
        if owner is not None and lifetime.new_local_object(owner, self.facts):
            self.sink.add(pos, "CYP020", f"{_core.expr_text(lhs)} keeps a pointer into '{owner.name}', "
                          "an object made in this function that nothing keeps alive after it returns",
                          anchored=True)

    def on_ReturnStatNode(self, node) -> None:
        value = getattr(node, "value", None)
        func = self.func_stack[-1] if self.func_stack else None
        if value is None or func is None or cls(func) != "CFuncDefNode":
            return
        if not _is_ptr(getattr(getattr(func, "type", None), "return_type", None)):
            return
        owner = lifetime.owner_of(value, self.facts)
        if owner is None:
            return
        if lifetime.new_local_object(owner, self.facts):
            self.sink.add(node.pos, "CYP020", f"returns a pointer into '{owner.name}', an object made in "
                          "this function that dies when it returns", anchored=True)
        elif lifetime.creates_object(owner):
            self.sink.add(node.pos, "CYP020", f"returns a pointer into {_core.expr_text(owner)}, a "
                          "temporary object that dies when the function returns", anchored=True)

    def _call_with_temporary(self, node, fn) -> None:
        entry = getattr(fn, "entry", None)
        if entry is None or not getattr(entry, "is_cfunction", False):
            return
        positions = self.pointer_functions().get(id(entry))
        if not positions:
            return
        for k, arg in lifetime.temporary_arguments(node, positions):
            self.sink.add(node.pos, "CYP020", f"{_core.expr_text(fn)}(...) returns a pointer into its "
                          f"argument {k + 1}, {_core.expr_text(arg)}, a temporary that is released right "
                          "after the call", anchored=True)
