"""CUDA-graph replay of compiled graphs: option ``cuda_graphs`` (``mode="reduce-overhead"``).

Why: the encoder block's training step spent 3.96 ms enqueueing kernels that run for 1.19 ms
(kernel rows; benchmarks/results/nvidia-h200/training_cuda_graphs/before_kernel_fixes_7fd5019/
encoder_block_ait.txt): the step is host-bound. A replayed graph enqueues every kernel of a
compiled graph with one call.

One compiled graph (:class:`GraphedCallable`):

1. the first call runs the compiled code as it is: Triton compiles (and autotunes) its kernels,
   cuBLAS and cuDNN pick their algorithms;
2. the second call captures the compiled code into a CUDA graph and replays it;
3. later calls replay it when they match the capture, and run the compiled code otherwise: the
   result is right either way, only the speed differs.

Inputs. *Static* inputs are read where they were at capture: parameters and buffers (AOTAutograd's
static input indices, or ``nn.Parameter``), inputs the graph writes to, and, in a backward graph,
the forward's saved values (its replay writes them at fixed addresses). Every other tensor input is
copied into a buffer of the graph before each replay. A replay needs every static input at its
captured address and every copied input with its captured shape, strides and dtype; other
arguments (ints) must equal the captured ones.

Outputs. A replay writes the same memory every time, so:

* values the caller may keep (the forward's user outputs, the backward's gradients, an inference
  graph's results) are copied out of the graph's memory;
* the forward's saved values go to the backward without a copy. The forward does not replay while
  a saved value of its previous replay is still referenced (two forwards before a backward,
  ``retain_graph``); such a call runs the compiled code instead. The backward's graph reuses the
  memory of saved values after their last use, so a backward with ``retain_graph=True`` (which
  will need them again) runs the compiled code as well.

Memory. The forward and backward of one Dynamo graph capture into one private memory pool, so the
backward's temporaries reuse the forward's. Once the forward is captured it holds its user outputs
only through tensors that do not own their memory, and it does the same with its saved values
when the backward's capture starts: the backward then frees each saved value after its last use,
as it does without graphs, and its later temporaries reuse that memory. That is safe because
nothing else allocates from the pool after the backward's capture. (Holding them, the encoder
block's pool reserved 432 MiB, 227 of them in use between steps; letting go, 308 MiB, 73 in use:
training_cuda_graphs/pools_held_1d5dbef/ and training_cuda_graphs/train_bench.log.)
The pool stays reserved while the compiled function lives, which is why the training benchmark
reports reserved memory next to allocated memory.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import torch

log = logging.getLogger("ait_dynamo")

BoxedCallable = Callable[[list[Any]], Any]

GRAPHED_KINDS = ("forward", "backward", "inference")


class Recorder(Protocol):
    """Captures one run of ``run`` and gives back its outputs and a function that replays it.

    ``pool_keeps_memory``: memory the captured code freed stays reserved for the pair's graphs
    (a CUDA graph pool), so the runner may let go of tensors whose memory a replay still writes."""

    pool_keeps_memory: bool

    def record(self, run: Callable[[], list[Any]]) -> tuple[list[Any], Callable[[], None]]: ...


class CudaGraphRecorder:
    """Captures with ``torch.cuda.CUDAGraph`` into a memory pool shared by the graphs of a pair."""

    pool_keeps_memory = True

    def __init__(self, pair: "GraphPair"):
        self.pair = pair

    def record(self, run: Callable[[], list[Any]]) -> tuple[list[Any], Callable[[], None]]:
        if self.pair.pool is None:
            self.pair.pool = torch.cuda.graph_pool_handle()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pair.pool):
            outputs = run()
        graph.replay()  # capturing does not run the kernels
        self.pair.graphs.append(graph)
        return outputs, graph.replay


@dataclass
class GraphPair:
    """The graphs compiled for one Dynamo graph: its forward, backward and inference graphs
    share a memory pool, and the backward reads the forward's saved values in place."""

    pool: Any = None
    forward: "GraphedCallable | None" = None
    graphs: list[Any] = field(default_factory=list)


# What captures graphs; the CPU tests put a simulation here (the replay reruns the compiled code
# on the graph's buffers and writes its outputs into the captured ones).
RECORDER_FACTORY: list[Callable[[GraphPair], Recorder]] = [CudaGraphRecorder]
_INSTANCES: "weakref.WeakSet[GraphedCallable]" = weakref.WeakSet()


def instances() -> list["GraphedCallable"]:
    """The graphed callables alive now (for tests and reports)."""
    return list(_INSTANCES)


@dataclass
class _Capture:
    replay: Callable[[], None]
    inputs: list[Any]  # copied inputs: the graph's buffers; others: as they were, or None once let go
    static: list[bool]
    pointers: list[int]  # per tensor input: the captured data pointer
    layouts: list[tuple]  # per tensor input: (shape, stride, dtype, device)
    outputs: list[Any]
    copy_back: list[int]  # copied inputs the graph writes to
    saved_pointers: set[int]  # forward: data pointers of the saved values
    pool_keeps_memory: bool
    # kept outputs that are views of an input: output index -> input index (see _hand_out)
    input_views: dict[int, int] = field(default_factory=dict)
    # the replay's checks by kind of input, made once at capture (see _replay_refusal)
    static_indices: list[int] = field(default_factory=list)
    copied_indices: list[int] = field(default_factory=list)
    other_indices: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for index, (value, is_static) in enumerate(zip(self.inputs, self.static)):
            if is_static:
                self.static_indices.append(index)
            elif isinstance(value, torch.Tensor):  # a copied input: the graph's buffer
                self.copied_indices.append(index)
            else:
                self.other_indices.append(index)


def _overlaps_itself(tensor: torch.Tensor) -> bool:
    """True when two indices of ``tensor`` reach one element (an expanded tensor): no buffer of
    that layout can receive a copy."""
    extent = 0  # the farthest offset the dims seen so far reach
    dims = sorted(((abs(st), s) for s, st in zip(tensor.shape, tensor.stride()) if s > 1))
    for stride, size in dims:
        if stride <= extent:
            return True
        extent += stride * (size - 1)
    return False


def _not_owning(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor at ``tensor``'s memory that does not keep that memory allocated."""
    storage = torch._C._construct_storage_from_data_pointer(
        tensor.untyped_storage().data_ptr(), tensor.device, tensor.untyped_storage().nbytes())
    view = torch.empty((0,), dtype=tensor.dtype, device=tensor.device)
    return view.set_(storage, tensor.storage_offset(), tensor.shape, tensor.stride())


def _layout(tensor: torch.Tensor) -> tuple:
    return (tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype, tensor.device)


class GraphedCallable:
    """A compiled boxed callable run through a CUDA graph (see the module docstring)."""

    def __init__(
        self,
        fn: BoxedCallable,
        name: str,
        kind: str,
        pair: GraphPair,
        num_user_outputs: int | None = None,
        static_indices: Sequence[int] = (),
        mutated_indices: Sequence[int] = (),
        aliasing_outputs: Sequence[int] | None = None,
    ):
        if kind not in GRAPHED_KINDS:
            raise ValueError(f"cuda graphs: unknown graph kind {kind!r}; valid: {', '.join(GRAPHED_KINDS)}")
        self.fn = fn
        self.name = name
        self.kind = kind
        self.pair = pair
        # Outputs past ``num_user_outputs`` of a forward are saved values for the backward.
        self.num_kept = num_user_outputs if kind == "forward" and num_user_outputs is not None else None
        self.static_indices = set(static_indices)
        self.mutated_indices = set(mutated_indices)
        # Outputs that may view an input, from the graph (None: any may). Only these are matched
        # to inputs by storage at capture: the backward frees the forward's saved values as it
        # goes, so a fresh output can sit at a dead input's address (a bias gradient did, in a
        # buffer the next forward overwrote, once it was no longer a split sum: 758c61f on the H200).
        self.aliasing_outputs = None if aliasing_outputs is None else set(aliasing_outputs)
        self.calls = 0
        self.replays = 0
        self.capture: _Capture | None = None
        self.disabled: str | None = None
        self.fallbacks: dict[str, int] = {}
        self._live_saved: list[weakref.ref] = []
        if kind == "forward":
            pair.forward = self
        self._boxed_call = True
        _INSTANCES.add(self)

    # -- calls ------------------------------------------------------------------------------------

    def __call__(self, args: list[Any]) -> Any:
        inputs = list(args)
        args.clear()
        if self.kind == "backward" and _graph_is_kept():
            # The backward's graph writes its temporaries over saved values it has used up; with
            # retain_graph=True they are needed again, so this call (and its capture) waits.
            self.fallbacks[RETAINED] = self.fallbacks.get(RETAINED, 0) + 1
            return self.fn(inputs)
        self.calls += 1
        if self.disabled is not None or self.calls == 1:
            return self.fn(inputs)
        if self.capture is None:
            reason = self._capture_refusal(inputs)
            if reason is not None:
                self._disable(reason)
                return self.fn(inputs)
            try:
                return self._record(inputs)
            except Exception as error:  # noqa: BLE001 - an op that cannot be captured: run it as is
                log.debug("capture of %s failed", self.name, exc_info=True)
                self._disable(f"capture failed ({type(error).__name__}: {error})")
                return self.fn(inputs)
        reason = self._replay_refusal(inputs)
        if reason is not None:
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
            log.debug("%s: running without its CUDA graph: %s", self.name, reason)
            return self.fn(inputs)
        return self._replay(inputs)

    def _disable(self, reason: str) -> None:
        self.disabled = reason
        warnings.warn(f"ait_dynamo: {self.name} runs without a CUDA graph: {reason}", RuntimeWarning, stacklevel=3)

    # -- capture ----------------------------------------------------------------------------------

    def _capture_refusal(self, inputs: list[Any]) -> str | None:
        devices = {x.device for x in inputs if isinstance(x, torch.Tensor)}
        uses_cuda = RECORDER_FACTORY[0] is CudaGraphRecorder
        if uses_cuda and (not torch.cuda.is_available() or any(d.type != "cuda" for d in devices) or len(devices) > 1):
            return "its inputs are not all on one CUDA device"
        for index, value in enumerate(inputs):
            if isinstance(value, torch.Tensor):
                if not self._is_static(index, value) and _overlaps_itself(value):
                    return f"input {index} overlaps itself in memory (an expanded tensor) and cannot be copied"
            elif not isinstance(value, (int, float, bool, type(None))):
                return f"input {index} is a {type(value).__name__}"
        return None

    def _is_static(self, index: int, value: torch.Tensor) -> bool:
        if index in self.static_indices or index in self.mutated_indices or isinstance(value, torch.nn.Parameter):
            return True
        forward = self.pair.forward
        if self.kind == "backward" and forward is not None and forward.capture is not None:
            return value.data_ptr() in forward.saved_pointers()
        return False

    def _record(self, inputs: list[Any]) -> Any:
        forward = self.pair.forward
        static = [isinstance(x, torch.Tensor) and self._is_static(i, x) for i, x in enumerate(inputs)]
        graph_inputs: list[Any] = []
        for value, is_static in zip(inputs, static):
            if isinstance(value, torch.Tensor) and not is_static:
                buffer = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)
                buffer.copy_(value)
                graph_inputs.append(buffer)
            else:
                graph_inputs.append(value)
        recorder = RECORDER_FACTORY[0](self.pair)
        keeps = recorder.pool_keeps_memory
        pointers = [x.data_ptr() if isinstance(x, torch.Tensor) else 0 for x in graph_inputs]
        layouts = [_layout(x) if isinstance(x, torch.Tensor) else x for x in graph_inputs]
        copy_back = [i for i in sorted(self.mutated_indices) if i < len(static) and not static[i]]
        targets = {i: inputs[i] for i in copy_back}
        storages = [x.untyped_storage().data_ptr() if isinstance(x, torch.Tensor) else None for x in graph_inputs]
        copied_sources = {i: x for i, x in enumerate(inputs) if isinstance(x, torch.Tensor) and not static[i]}
        # Keep the graph's buffers; hold static inputs only where a pool cannot keep freed memory
        # (the replay of a simulation reruns the code on them). Holding them in a CUDA pool would
        # stop the backward from freeing the forward's saved values during its capture.
        # Aliases of their own: holding the caller's tensors would keep, say, the forward's
        # handed-out saved values referenced and block the forward's next replay.
        retained = [x if not s_ else None if keeps else x.detach() for x, s_ in zip(graph_inputs, static)]
        inputs.clear()
        if keeps:
            if self.kind == "backward" and forward is not None:
                forward.let_go_of_saved_values()
            box = [graph_inputs]
            del graph_inputs
            run: Callable[[], list[Any]] = lambda: _as_list(self.fn(box.pop()))  # noqa: E731
        else:
            held = [x if not s_ else r for x, r, s_ in zip(graph_inputs, retained, static)]
            del graph_inputs
            run = lambda: _as_list(self.fn(list(held)))  # noqa: E731
        outputs, replay = recorder.record(run)
        start = self.num_kept or 0
        kept = len(outputs) if self.num_kept is None else self.num_kept
        input_views = {
            index: storages.index(value.untyped_storage().data_ptr())
            for index, value in enumerate(outputs[:kept])
            if isinstance(value, torch.Tensor) and value.untyped_storage().data_ptr() in storages
            and (self.aliasing_outputs is None or index in self.aliasing_outputs)
        }
        self.capture = _Capture(
            replay=replay,
            inputs=retained,
            static=static,
            pointers=pointers,
            layouts=layouts,
            outputs=outputs,
            copy_back=copy_back,
            saved_pointers={x.data_ptr() for x in outputs[start:] if isinstance(x, torch.Tensor)}
            if self.kind == "forward" else set(),
            pool_keeps_memory=keeps,
            input_views=input_views,
        )
        log.info("%s: captured a CUDA graph (%d static inputs, %d copied)", self.name, sum(static),
                 sum(isinstance(x, torch.Tensor) and not s_ for x, s_ in zip(retained, static)))
        self._finish_copy_back(targets)
        result = self._hand_out(copied_sources)
        if keeps:  # the caller got copies of the kept outputs: the backward's capture may reuse them
            outputs[:kept] = [_not_owning(x) if isinstance(x, torch.Tensor) and i not in input_views else x
                              for i, x in enumerate(outputs[:kept])]
        return result

    def let_go_of_saved_values(self) -> None:
        """Hold the saved values only through tensors that do not own their memory (called as the
        backward's capture starts; see the module docstring)."""
        if self.capture is None or not self.capture.pool_keeps_memory or self.num_kept is None:
            return
        outputs = self.capture.outputs
        outputs[self.num_kept:] = [_not_owning(x) if isinstance(x, torch.Tensor) else x
                                   for x in outputs[self.num_kept:]]

    def saved_pointers(self) -> set[int]:
        """Data pointers of the forward's outputs that the backward may read in place."""
        return set() if self.capture is None else self.capture.saved_pointers

    # -- replay -----------------------------------------------------------------------------------

    def _replay_refusal(self, inputs: list[Any]) -> str | None:
        """Why this call cannot replay, or ``None``. This runs on every call, so it checks as
        little as is needed, by kind of input (lists made at capture):

        * copied inputs: shape, strides, dtype and device, as captured (the graph's buffers have them);
        * other arguments: equal to the captured ones;
        * static inputs: the data pointer only, in one C++ call where torch has it. Their layout
          was fixed when the graph was compiled: under ``torch.compile`` Dynamo's guards send a
          parameter of another shape or strides to a new compile before this runs, and the
          compiled code (with or without a graph) is specialised to the traced layouts anyway.
          Checking every parameter's layout in Python cost ResNet-50 (320 inputs) about 0.4 ms
          a replay: on the H200 its host time per step went from 1117 to 715 us with this change,
          and the replayed step from 2.515 to 2.058 ms (benchmarks/results/nvidia-h200/models/).
        """
        capture = self.capture
        assert capture is not None
        if len(inputs) != len(capture.inputs):
            return "a different number of inputs"
        for index in capture.copied_indices:
            value = inputs[index]
            if not isinstance(value, torch.Tensor) or _layout(value) != capture.layouts[index]:
                return f"input {index} has another shape, stride, dtype or device"
        for index in capture.other_indices:
            value = inputs[index]
            if isinstance(value, torch.Tensor) or value != capture.layouts[index]:
                return f"argument {index} is {value!r}, captured with {capture.layouts[index]!r}"
        moved = _moved_static_input(inputs, capture.static_indices, capture.pointers)
        if moved is not None:
            return f"static input {moved} is not where it was at capture"
        if self._live_saved and any(ref() is not None for ref in self._live_saved):
            return "the saved values of its previous run are still in use"
        return None

    def _replay(self, inputs: list[Any]) -> Any:
        capture = self.capture
        assert capture is not None
        buffers = capture.inputs
        for index in capture.copied_indices:
            buffers[index].copy_(inputs[index])
        targets = {i: inputs[i] for i in capture.copy_back}
        view_sources = {i: inputs[i] for i in capture.input_views.values()}
        inputs.clear()
        capture.replay()
        self.replays += 1
        self._finish_copy_back(targets)
        return self._hand_out(view_sources)

    def _finish_copy_back(self, targets: dict[int, torch.Tensor]) -> None:
        capture = self.capture
        assert capture is not None
        for index, target in targets.items():
            target.copy_(capture.inputs[index])

    def _hand_out(self, view_sources: dict[int, Any]) -> list[Any]:
        """Outputs the caller may keep are copies; the forward's saved values are the graph's own,
        watched so that the next replay waits until the backward has released them. A kept output
        that views an input is that view of the caller's input (AOTAutograd may rebuild it from
        its strides and storage offset, which a copy does not have)."""
        capture = self.capture
        assert capture is not None
        outputs = capture.outputs
        kept = len(outputs) if self.num_kept is None else self.num_kept
        result: list[Any] = []
        self._live_saved = []
        for index, value in enumerate(outputs):
            if not isinstance(value, torch.Tensor):
                result.append(value)
            elif index in capture.input_views:
                source_index = capture.input_views[index]
                if capture.static[source_index]:  # read in place: the output views the caller's tensor
                    result.append(value.detach())
                else:  # a copied input: the same view of the caller's tensor, not of the graph's buffer
                    source = view_sources[source_index]
                    offset = source.storage_offset() + value.storage_offset()
                    result.append(source.as_strided(value.shape, value.stride(), offset))
            elif index < kept:
                result.append(value.clone(memory_format=torch.preserve_format))
            else:
                alias = value.detach()
                self._live_saved.append(weakref.ref(alias))
                result.append(alias)
        return result


RETAINED = "the backward runs with retain_graph=True"

# One C++ call compares many data pointers (what Inductor's CUDA-graph trees use; CUDA builds of
# torch have it): 25 us for 320 tensors against 70 us for a Python loop of data_ptr() calls.
_POINTERS_EQUAL = getattr(torch._C, "_tensors_data_ptrs_at_indices_equal", None)


def _moved_static_input(inputs: list[Any], indices: list[int], pointers: list[int]) -> int | None:
    """The first of ``indices`` whose input is not a tensor at its captured data pointer
    (``pointers[index]``: one entry per input)."""
    if not indices:
        return None
    if _POINTERS_EQUAL is not None:
        try:
            if _POINTERS_EQUAL(inputs, pointers, indices):
                return None
        except (TypeError, RuntimeError, AttributeError):  # a non-tensor where a tensor was: find it below
            pass
    for index in indices:
        value = inputs[index]
        if not isinstance(value, torch.Tensor) or value.data_ptr() != pointers[index]:
            return index
    return None


def _graph_is_kept() -> bool:
    """True inside a backward pass that keeps its graph (``retain_graph=True``)."""
    try:
        return bool(torch._C._autograd._get_current_graph_task_keep_graph())
    except RuntimeError:  # not inside a backward pass
        return False


def _as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def wrap(
    fn: BoxedCallable,
    name: str,
    kind: str,
    pair: GraphPair | None,
    num_user_outputs: int | None,
    mutated_indices: Sequence[int],
    aliasing_outputs: Sequence[int] | None = None,
) -> BoxedCallable:
    """``fn`` run through CUDA graphs, with the static inputs AOTAutograd names (parameters and
    buffers) read in place. ``aliasing_outputs``: the outputs that may be views of an input."""
    if kind not in GRAPHED_KINDS:
        return fn
    return GraphedCallable(fn, name, kind, pair or GraphPair(), num_user_outputs, _static_input_indices(kind),
                           mutated_indices, aliasing_outputs)


def _static_input_indices(kind: str) -> list[int]:
    """AOTAutograd's parameters and buffers among the forward's inputs (``torch.compile`` only)."""
    if kind == "backward":
        return []
    context = torch._guards.TracingContext.try_get()
    metadata = getattr(context, "fw_metadata", None)
    return list(getattr(metadata, "static_input_indices", None) or [])
