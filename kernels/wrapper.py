"""Plan → the source of one Python module whose ``make_call(constants)`` returns the compiled
graph as a boxed function (``call(args: list)``)."""

from __future__ import annotations

import dataclasses
import keyword
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, Callable

import jinja2
import torch
from torch import fx

from ait_dynamo.kernels import runtime
from ait_dynamo.kernels.codegen import generate_kernel
from ait_dynamo.kernels.group_call import PartialSums, SymbolLocals, aten_function_source, group_call_source
from ait_dynamo.kernels.split_sum import finishing_kernel
from ait_dynamo.kernels.op_table import HELPERS_SOURCE
from ait_dynamo.kernels.reuse import choose_reuse, owned_buffers
from ait_dynamo.kernels.slots import SlotPool

from ait_dynamo.kernels.source import call_source, entry_point_source, target_source, value_source
from ait_dynamo.kernels.views import reinterpret_source, reinterpreted_views
from ait_dynamo.passes.graph_utils import FRESH_RESULTS, mutated_placeholders
from ait_dynamo.passes.plan import FusionGroup, Plan
from ait_dynamo.passes.sizes import computable, symbol_sources

# Names the generated module uses itself; graph values never take them.
_RESERVED = {"torch", "args", "call", "make_call", "constants", "triton", "tl", "tmath", "_rt", "error",
             "verifier", "call_verifying", "current_call", "call_first_verified", "LaunchSite",
             "LayoutGuard", "layouts", "call_checking", "_alloc", "_alloc_here", "_alloc_elsewhere",
             "_reinterpret"}


@dataclass(frozen=True)
class GeneratedModule:
    source: str
    constants: tuple[Any, ...]  # bound to make_call; not part of the source (nor the cache key)
    aten_externs: tuple[str, ...]
    kernels: tuple[Any, ...] = ()  # GeneratedKernel per fusion group, in plan order


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("ait_dynamo.kernels", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )


def render_template(template_name: str, **parameters: Any) -> str:
    return _environment().get_template(template_name).render(**parameters)


class _Names:
    """Node → Python identifier, unique and clear of keywords, builtins we use and imports."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)
        self.by_node: dict[fx.Node, str] = {}

    def __call__(self, node: fx.Node) -> str:
        name = self.by_node.get(node)
        if name is None:
            base = node.name if node.name.isidentifier() else "v"
            name = base
            suffix = 0
            while name in self.taken or keyword.iskeyword(name):
                suffix += 1
                name = f"{base}_{suffix}"
            self.taken.add(name)
            self.by_node[node] = name
        return name


def generate_wrapper(plan: Plan, gm: fx.GraphModule, version: str, autotune: bool = False,
                     verify: bool = False, triton_runs_on: Callable[[str], bool] = runtime.triton_runs_on) -> GeneratedModule:
    """``verify``: also write ``call_verifying``, the first call's body, which judges each
    kernel against ATen (``ait_dynamo/verify.py``). ``triton_runs_on(device_type)``: whether a
    group on that device launches its kernel; decided here, once, so that the wrapper holds no
    per-call test of it (the source differs, and so does the cache key)."""
    # Imports first: their top-level names must not be taken by graph values.
    call_nodes = [
        node
        for step in plan.steps
        for node in step.nodes
        if node.op == "call_function"
    ]
    imports = {
        module
        for node in call_nodes
        for module in [target_source(node.target)[1]]
        if module is not None and module != "torch"
    }
    names = _Names(_RESERVED | {module.split(".")[0] for module in imports})
    inputs = [names(p) for p in plan.placeholders]
    symbols = SymbolLocals(plan.placeholders, names)
    constants: list[Any] = []
    constant_names: list[str] = []
    body: list[tuple[str, list[str]]] = []
    verifying_body: list[tuple[str, list[str]]] = []  # with verify: body plus each kernel's check
    externs: list[str] = []
    kernels: list[Any] = []
    for group in (s for s in plan.steps if isinstance(s, FusionGroup)):
        names.taken.add(group.name)
        names.taken.add(f"{group.name}_aten")
        names.taken.add(f"{group.name}_site")
        names.taken.add(f"reference_{group.name}")
    # Identical kernels (the same layer's work, repeated per transformer layer) are defined once:
    # Triton compiles each distinct function separately, so duplicates only cost compile time.
    owned = owned_buffers(plan)
    slots = SlotPool(plan, names)
    partials = PartialSums()  # split reductions' scratch, shared along the call
    cuda_index = _single_cuda_device(plan)
    cuda_allocator = ("_alloc", cuda_index) if cuda_index is not None else None
    setup: list[str] = []  # make_call lines: the launch sites
    entry_points: dict[Any, str] = {}  # OpOverload → the local bound to its cheapest entry point

    def bound_op(op: Any) -> str:
        if op not in entry_points:
            name = f"_{op.namespace}_{op._opname}_{op._overloadname}".replace(".", "_")
            while name in names.taken:
                name += "_"
            names.taken.add(name)
            entry_points[op] = name
        return entry_points[op]

    # The first call checks the layout of every value a kernel reads that the trace only predicted
    # (graph inputs, ATen results): kernels/layout_guard.py. Kernel outputs are allocated as traced.
    checked = _layouts_to_check(plan, triton_runs_on)
    # views written as reinterpretations of their base's traced layout, and the bases the first
    # call checks for that (kernels/views.py)
    reinterpreted, bases = reinterpreted_views(plan, lambda g: triton_runs_on(g.outputs[0].meta["val"].device.type))
    checked |= bases
    checking_body: list[tuple[str, list[str]]] = [(_layout_check(p, names, "input", symbols), []) for p in plan.placeholders
                                                  if p in checked]
    verifying_body.extend(checking_body)
    launched: set[str] = set()  # kernels some site launches: only those are defined
    defined: dict[str, str] = {}  # source with the name blanked → the name it is defined under
    sources: list[tuple[str, str]] = []

    def define_once(generated: Any) -> Any:
        """``generated``, or under the name of an identical kernel defined earlier."""
        first = defined.setdefault(generated.canonical_source, generated.name)
        if first == generated.name:
            sources.append((generated.name, generated.source))
            return generated
        return dataclasses.replace(generated, name=first)

    for index, step in enumerate(plan.steps):
        if isinstance(step, FusionGroup):
            kernel = define_once(generate_kernel(step, names))
            kernels.append(kernel)
            # named after the group: identical split kernels may cast their sums alike or not
            finishing = define_once(finishing_kernel(kernel, f"{step.name}_sum")) if kernel.split else None
            if finishing is not None:
                kernels.append(finishing)
            outputs_by_buffer = {buffer: node for node, buffer in kernel.out_buffers}
            # autotuning launches a kernel several times on the same arguments: no in-place outputs
            reused = {} if autotune else choose_reuse(plan, index, step, kernel.inplace_candidates,
                                                       kernel.out_buffers, owned)
            reuse = {
                buffer: (names(node), tuple(node.meta["val"].shape) != tuple(outputs_by_buffer[buffer].meta["val"].shape))
                for buffer, node in reused.items()
            }
            runs = triton_runs_on(step.outputs[0].meta["val"].device.type)
            call = group_call_source(step, kernel, names, symbols, autotune, reuse, triton_runs=runs,
                                     take_slot=partial(slots.take, index=index) if runs else None, finishing=finishing,
                                     partials=partials, cuda_allocator=cuda_allocator)
            frees = [names(n) for n in plan.frees_after.get(index, [])] + call.taken
            slots.hold(index, frees, set(reused.values()))
            header = f"# {step.name}: {step.kind}, {len(step.nodes)} ops\n{' ' * 8}"
            body.append((header + call.source(), frees))
            checking_body.append(body[-1])
            checks = [(_layout_check(n, names, step.name, symbols), []) for n in step.outputs if n in checked and not runs]
            checking_body.extend(checks)  # ATen's results, where the group is its ATen calls
            setup.extend(call.setup)
            if runs:
                launched.add(kernel.name)
                if finishing is not None:
                    launched.add(finishing.name)
            if verify:
                verifying_body.append((header + (call.verified_source() if runs else call.source()), frees))
                verifying_body.extend(checks)
            continue
        node = step.node
        if node.op == "get_attr":
            constants.append(_fetch_attr(gm, str(node.target)))
            constant_names.append(names(node))
            line = None
        elif node.op == "call_module":
            constants.append(_fetch_attr(gm, str(node.target)))
            module_name = f"module_{len(constants) - 1}"
            constant_names.append(module_name)
            names.taken.add(module_name)
            arguments = [value_source(a, names) for a in node.args]
            arguments += [f"{k}={value_source(v, names)}" for k, v in node.kwargs.items()]
            line = f"{names(node)} = {module_name}({', '.join(arguments)})"
        elif node in reinterpreted:
            line = f"{names(node)} = {reinterpret_source(node, reinterpreted[node], names(node.args[0]))}"
        else:
            line = f"{names(node)} = {call_source(node, names, bound_op)[0]}"
            if step.aten_op is not None:
                externs.append(step.aten_op)
            elif node.target in FRESH_RESULTS:  # our own kernels' entry points (batch norm's reductions)
                externs.append(target_source(node.target)[0])
        frees = [names(n) for n in plan.frees_after.get(index, [])]
        slots.hold(index, frees, set())
        if line is not None:
            body.append((line, frees))
            verifying_body.append(body[-1])
            checking_body.append(body[-1])
            if node in checked:
                check = (_layout_check(node, names, str(node.target), symbols), [])
                verifying_body.append(check)
                checking_body.append(check)
        elif frees:  # a constant's step frees nothing of its own, but may end another value's life
            body.append(("pass", frees))
            verifying_body.append(body[-1])
            checking_body.append(body[-1])
    slots.finish()
    result = value_source(plan.output.args[0], _returned_names(plan, names))
    allocates = cuda_allocator is not None and any("_alloc(" in line for line, _ in body)
    prologue = [f"_alloc = _alloc_here if _rt.current_cuda_device() == {cuda_index} else _alloc_elsewhere"] if allocates else []
    if allocates:
        setup.append(f"_alloc_here, _alloc_elsewhere = _rt.cuda_allocators({cuda_index})")
    checks_run = bool(checked) and bool(launched or reinterpreted)
    source = render_template(
        "wrapper.py.jinja",
        version=version,
        imports=sorted(imports),
        constants=constant_names,
        inputs=inputs,
        unused_inputs=[names(p) for p in plan.unused_inputs],
        symbols=symbols.lines(),
        prologue=prologue,
        kernels=[source for name, source in sources if name in launched],
        aten_functions=[aten_function_source(g, names) for g in plan.steps if isinstance(g, FusionGroup)],
        helpers=HELPERS_SOURCE if launched else "",
        setup=[f"{name} = {entry_point_source(op)}" for op, name in entry_points.items()] + setup,
        body=body,
        verifying_body=verifying_body if verify and launched else [],
        checking_body=checking_body if checks_run else [],
        check_every_call=checks_run and any(not _static_layout(n) for n in checked),
        reinterprets=any("_reinterpret(" in line for line, _ in body),
        result=result,
    )
    return GeneratedModule(
        source=source, constants=tuple(constants), aten_externs=tuple(externs), kernels=tuple(kernels)
    )


def _single_cuda_device(plan: Plan) -> int | None:
    """The index of the one CUDA device the graph's CUDA tensors are on (it may hold CPU tensors
    too), or ``None`` (no CUDA tensor, or several devices): the wrapper allocates on it through
    :func:`runtime.cuda_allocators`."""
    indices = {value.device.index for node in plan.graph.nodes
               for value in [node.meta.get("val")] if isinstance(value, torch.Tensor) and value.device.type == "cuda"}
    return indices.pop() if len(indices) == 1 and None not in indices else None


def _layouts_to_check(plan: Plan, triton_runs_on: Callable[[str], bool]) -> set[fx.Node]:
    """Values launched kernels read whose layout comes from the trace, not from ait: graph inputs
    and ATen results, where the sizes and strides are static numbers; and ATen results over
    symbolic sizes (:func:`_symbolic_layout`)."""
    computed = {n for step in plan.steps if isinstance(step, FusionGroup) for n in step.outputs}
    # an input the graph writes to is not replaced by a copy (the write would miss the caller's
    # tensor); dynamo guards the strides of the inputs the user passes
    computed |= mutated_placeholders(plan.graph)
    known = set(symbol_sources(plan.placeholders, lambda n: n.name))
    checked: set[fx.Node] = set()
    for step in plan.steps:
        if not isinstance(step, FusionGroup) or not triton_runs_on(step.outputs[0].meta["val"].device.type):
            continue
        for node in step.reads():
            value = node.meta.get("val")
            if node in computed or node.op not in ("placeholder", "call_function") or not isinstance(value, torch.Tensor):
                continue
            if _static_layout(node) or _symbolic_layout(node, known):
                checked.add(node)
    return checked


def _static_layout(node: fx.Node) -> bool:
    value = node.meta["val"]
    return all(isinstance(v, int) for v in (*value.shape, *value.stride()))


def _symbolic_layout(node: fx.Node, known: set) -> bool:
    """An ATen result whose traced layout is symbolic and can be computed from the inputs. Its
    real strides may differ from the trace's for some sizes only: ``constant_pad_nd`` with pads
    that are symbolic ints traces a contiguous result, and ATen returns a clone in the input's
    layout where every pad is at most 0. Such values are checked on every call, not just the
    first: 0.94 us a check (``LayoutGuard.expect`` under timeit, 2-core AMD EPYC, torch 2.13).
    (Dynamo guards the inputs' strides.)"""
    value = node.meta["val"]
    sizes = (*value.shape, *value.stride())
    return node.op == "call_function" and all(computable(v, known) for v in sizes)


def _layout_check(node: fx.Node, names: _Names, op: str, symbols: SymbolLocals) -> str:
    value = node.meta["val"]
    name = names(node)
    return (f"{name} = layouts.expect({name}, {symbols.tuple_source(value.shape)}, "
            f"{symbols.tuple_source(value.stride())}, {name!r}, {op!r})")


def _returned_names(plan: Plan, names: _Names) -> Any:
    """Names for the returned values: the k-th return of a value a kernel writes several times
    is its k-th buffer, so autograd gets distinct tensors and never clones them."""
    copies: dict[fx.Node, int] = {}
    for step in plan.steps:
        if isinstance(step, FusionGroup):
            copies.update(step.output_copies)
    seen: dict[fx.Node, int] = {}

    def name(node: fx.Node) -> str:
        if node not in copies:
            return names(node)
        index = seen.get(node, 0)
        seen[node] = index + 1
        return names(node) if index == 0 else f"{names(node)}__copy{index}"

    return name


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value
