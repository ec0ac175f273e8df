"""Host time per line of the generated wrappers, ait's and Inductor's, measured without a profiler
(issue 12).

A profiler distorts what it measures here: torch.profiler records every op and runtime call, and
cProfile every Python frame, each at a cost of its own, and ait's launch went through more frames
than Inductor's (under cProfile ait's launch cost 30 us against Inductor's 24:
``benchmarks/results/nvidia-h200/models/host_gpt2_train_feaf4d3/``). This instead rewrites the steady-state ``call``
of each generated module as it is loaded, ait's (``ait_dynamo.compile.load_module``) and Inductor's
(``torch._inductor.codecache._reload_python_module``) alike: after every statement of its body
(and of the ``with`` blocks in it: Inductor's device guard), one clock read
(``time.perf_counter_ns``, about 0.1 us) charges the time since the previous statement to that
statement. So both backends' lines are measured the same way, in the same run, in their real
context (a model's wrapper, not one call repeated: a micro-benchmark repeating one launch gave
5 us where a launch line of GPT-2's backward cost 35-45). ``record()`` is on while its ``with`` block runs (modules
compiled inside it are the instrumented ones), and ``table()`` then gives, per module, the time
per call by kind of line (launch, allocation, extern by op, view, free) and the costliest lines
with their source.
"""

from __future__ import annotations

import ast
import contextlib
import linecache
import re
import sys
import time
import types
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterator

_CLOCK = "_ait_line_clock"


@dataclass
class ModuleLines:
    path: str  # "<ait 3 backward>": the backend, the order it was loaded in, forward or backward
    lines: list[str]
    ns: dict[int, int] = field(default_factory=lambda: defaultdict(int))  # statement line → ns
    hits: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    calls: int = 0


_MODULES: list[ModuleLines] = []


def _tick(line: int) -> ast.stmt:
    return ast.parse(f"{_CLOCK}.tick({line})").body[0]


def _clocked(statements: list[ast.stmt]) -> list[ast.stmt]:
    """``statements`` with a clock read after each; a ``with`` block's statements are clocked
    inside it, and its exit after it."""
    body: list[ast.stmt] = []
    for statement in statements:
        if isinstance(statement, ast.Return):  # the return's expression is charged to the return
            body += [_tick(statement.lineno), statement]
            continue
        if isinstance(statement, ast.With):
            statement.body = _clocked(statement.body)
        body += [statement, _tick(statement.lineno)]
    return body


def instrument(source: str) -> str | None:
    """``source`` with every function named ``call`` clocked line by line, or ``None`` when it
    has no such function (Inductor's kernel modules)."""
    tree = ast.parse(source)
    found = False
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef) and function.name == "call":
            function.body = [ast.parse(f"{_CLOCK}.start()").body[0], *_clocked(function.body)]
            found = True
    if not found:
        return None
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def _label(backend: str, source: str) -> str:
    return f"<{backend} {len(_MODULES)} {'backward' if 'tangents_1' in source else 'forward'}>"


class _Clock:
    def __init__(self, module: ModuleLines):
        self.module = module
        self.last = 0

    def start(self) -> None:
        self.module.calls += 1
        self.last = time.perf_counter_ns()

    def tick(self, line: int) -> None:
        now = time.perf_counter_ns()
        self.module.ns[line] += now - self.last
        self.module.hits[line] += 1
        self.last = time.perf_counter_ns()  # the clock's own call is not charged to the next line


def _load(backend: str, source: str, rewritten: str, name: str, path: str | None = None) -> types.ModuleType:
    """The module of ``rewritten``, its clock recording into a new :class:`ModuleLines`."""
    lines = ModuleLines(_label(backend, source), source.splitlines())
    path = path or lines.path
    module = types.ModuleType(name)
    module.__file__ = path
    # Triton reads kernel sources through linecache: serve the rewritten text under the path
    linecache.cache[path] = (len(rewritten), None, rewritten.splitlines(True), path)
    module.__dict__[_CLOCK] = _Clock(lines)
    exec(compile(rewritten, path, "exec"), module.__dict__)
    _MODULES.append(lines)
    return module


@contextlib.contextmanager
def record() -> Iterator[list[ModuleLines]]:
    """Instrument the wrappers ait and Inductor load inside this block; yields the list (growing
    as modules load) of their records."""
    from torch._inductor import codecache

    from ait_dynamo import compile as ait_compile

    recorded: list[ModuleLines] = []
    ait_load, inductor_load = ait_compile.load_module, codecache._reload_python_module

    def load_ait(source: str, cache_dir: str) -> tuple[types.ModuleType, bool]:
        rewritten = instrument(source)
        if rewritten is None:
            return ait_load(source, cache_dir)
        module = _load("ait", source, rewritten, f"ait_dynamo_instrumented_{len(_MODULES)}")
        recorded.append(_MODULES[-1])
        return module, False

    def load_inductor(key: str, path: str, set_sys_modules: bool = True) -> types.ModuleType:
        with open(path, encoding="utf-8") as file:
            source = file.read()
        rewritten = instrument(source)
        if rewritten is None:
            return inductor_load(key, path, set_sys_modules=set_sys_modules)
        module = _load("inductor", source, rewritten, f"inductor_instrumented_{key}", path=f"<inductor {key}>")
        module.key = key  # type: ignore[attr-defined]
        if set_sys_modules:
            sys.modules[module.__name__] = module
        recorded.append(_MODULES[-1])
        return module

    ait_compile.load_module = load_ait
    codecache._reload_python_module = load_inductor
    try:
        yield recorded
    finally:
        ait_compile.load_module = ait_load
        codecache._reload_python_module = inductor_load


def reset(modules: list[ModuleLines]) -> None:
    for module in modules:
        module.ns.clear()
        module.hits.clear()
        module.calls = 0


# ait: ``try:`` around ``kernel_3_site.launch(...)``; Inductor: ``triton_poi_fused_0.run(..., stream=stream0)``
_KINDS = (
    ("launch", re.compile(r"_site\.launch\(|^try:|\.run\(.*stream=")),
    ("extern", re.compile(r"extern_kernels\.([A-Za-z0-9_]+)\(|= _aten_([A-Za-z0-9_]+)\(|torch\.ops\.aten\.([A-Za-z0-9_]+)")),
    ("allocation", re.compile(r"torch\.empty|empty_strided|torch\.zeros|\b_alloc\(")),
    ("free", re.compile(r"^del ")),
    ("unpack", re.compile(r"= args$|^args\.clear\(\)")),
    ("view", re.compile(r"\.(?:view|reshape|as_strided|t|transpose|permute|expand|unsqueeze|squeeze|select)\(|reinterpret")),
)


def line_kind(text: str) -> str:
    """What a wrapper line does: launch, extern <op>, allocation, free, unpack, view or other."""
    text = text.strip()
    for kind, pattern in _KINDS:
        match = pattern.search(text)
        if match:
            op = next((group for group in match.groups() if group), None)
            return f"{kind} {op}" if op else kind
    return "other"


def table(modules: list[ModuleLines], top: int = 25) -> str:
    out: list[str] = []
    for module in modules:
        if not module.calls:
            continue
        calls = module.calls
        total = sum(module.ns.values()) / calls / 1e3
        kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        for line, ns in module.ns.items():
            kind = line_kind(module.lines[line - 1])
            kinds[kind][0] += ns / calls / 1e3
            kinds[kind][1] += module.hits[line] / calls
        out.append(f"== {module.path}: {calls} calls, {total:.1f} us of host time per call in its body")
        out.append(f"{'us/call':>9s} {'lines/call':>10s} {'us/line':>8s}  kind")
        for kind, (us, count) in sorted(kinds.items(), key=lambda item: -item[1][0]):
            out.append(f"{us:9.1f} {count:10.1f} {us / max(count, 1e-9):8.2f}  {kind}")
        out.append("costliest lines:")
        ranked = sorted(module.ns.items(), key=lambda item: -item[1])[:top]
        for line, ns in ranked:
            out.append(f"{ns / calls / 1e3:9.1f}  {line:5d}  {module.lines[line - 1].strip()[:140]}")
    return "\n".join(out) + "\n"

