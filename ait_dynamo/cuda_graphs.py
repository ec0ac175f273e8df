"""CUDA-graph replay of compiled graphs: option ``cuda_graphs`` (``mode="reduce-overhead"``).

Why: the encoder block's training step spent 3.9-4.4 ms enqueueing work that takes the GPU about
2.4 ms (benchmarks/results/nvidia-h200/memory_and_launch/host_profile): the step is host-bound.
A replayed graph enqueues every kernel of a compiled graph with one call.

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
  ``retain_graph``); such a call runs the compiled code instead.

Memory. The forward and backward of one Dynamo graph capture into one private memory pool, so the
backward's temporaries reuse the forward's. The pool stays reserved while the compiled function
lives, which is why the training benchmark reports reserved memory next to allocated memory.
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
    """Captures one run of ``run`` and gives back its outputs and a function that replays it."""

    def record(self, run: Callable[[], list[Any]]) -> tuple[list[Any], Callable[[], None]]: ...


class CudaGraphRecorder:
    """Captures with ``torch.cuda.CUDAGraph`` into a memory pool shared by the graphs of a pair."""

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
    inputs: list[Any]  # static inputs as they were; copied inputs: the graph's buffers
    static: list[bool]
    pointers: list[int]  # per tensor input: the captured data pointer
    layouts: list[tuple]  # per tensor input: (shape, stride, dtype, device)
    outputs: list[Any]
    copy_back: list[int]  # copied inputs the graph writes to


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
        static = [isinstance(x, torch.Tensor) and self._is_static(i, x) for i, x in enumerate(inputs)]
        graph_inputs: list[Any] = []
        for value, is_static in zip(inputs, static):
            if isinstance(value, torch.Tensor) and not is_static:
                buffer = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=value.device)
                buffer.copy_(value)
                graph_inputs.append(buffer)
            elif isinstance(value, torch.Tensor):
                # an alias of its own: holding the caller's tensor would keep, say, the forward's
                # handed-out saved values referenced and block the forward's next replay
                graph_inputs.append(value.detach())
            else:
                graph_inputs.append(value)
        outputs, replay = RECORDER_FACTORY[0](self.pair).record(lambda: _as_list(self.fn(list(graph_inputs))))
        self.capture = _Capture(
            replay=replay,
            inputs=graph_inputs,
            static=static,
            pointers=[x.data_ptr() if isinstance(x, torch.Tensor) else 0 for x in graph_inputs],
            layouts=[_layout(x) if isinstance(x, torch.Tensor) else x for x in graph_inputs],
            outputs=outputs,
            copy_back=[i for i in sorted(self.mutated_indices) if i < len(static) and not static[i]],
        )
        n_static = sum(static)
        log.info("%s: captured a CUDA graph (%d static inputs, %d copied)", self.name, n_static,
                 sum(isinstance(x, torch.Tensor) for x in inputs) - n_static)
        self._finish_copy_back(inputs)
        return self._hand_out()

    def saved_pointers(self) -> set[int]:
        """Data pointers of the forward's outputs that the backward may read in place."""
        if self.capture is None:
            return set()
        start = self.num_kept or 0
        return {x.data_ptr() for x in self.capture.outputs[start:] if isinstance(x, torch.Tensor)}

    # -- replay -----------------------------------------------------------------------------------

    def _replay_refusal(self, inputs: list[Any]) -> str | None:
        capture = self.capture
        assert capture is not None
        if len(inputs) != len(capture.inputs):
            return "a different number of inputs"
        for index, value in enumerate(inputs):
            if isinstance(value, torch.Tensor):
                if capture.static[index]:
                    if value.data_ptr() != capture.pointers[index] or _layout(value) != capture.layouts[index]:
                        return f"static input {index} is not where it was at capture"
                elif _layout(value) != capture.layouts[index]:
                    return f"input {index} has another shape, stride, dtype or device"
            elif value != capture.layouts[index]:
                return f"argument {index} is {value!r}, captured with {capture.layouts[index]!r}"
        if any(ref() is not None for ref in self._live_saved):
            return "the saved values of its previous run are still in use"
        return None

    def _replay(self, inputs: list[Any]) -> Any:
        capture = self.capture
        assert capture is not None
        for value, buffer, is_static in zip(inputs, capture.inputs, capture.static):
            if isinstance(value, torch.Tensor) and not is_static:
                buffer.copy_(value)
        capture.replay()
        self.replays += 1
        self._finish_copy_back(inputs)
        return self._hand_out()

    def _finish_copy_back(self, inputs: list[Any]) -> None:
        capture = self.capture
        assert capture is not None
        for index in capture.copy_back:
            inputs[index].copy_(capture.inputs[index])

    def _hand_out(self) -> list[Any]:
        """Outputs the caller may keep are copies; the forward's saved values are the graph's own,
        watched so that the next replay waits until the backward has released them."""
        outputs = self.capture.outputs  # type: ignore[union-attr]
        kept = len(outputs) if self.num_kept is None else self.num_kept
        result: list[Any] = []
        self._live_saved = []
        for index, value in enumerate(outputs):
            if not isinstance(value, torch.Tensor):
                result.append(value)
            elif index < kept:
                result.append(value.clone(memory_format=torch.preserve_format))
            else:
                alias = value.detach()
                self._live_saved.append(weakref.ref(alias))
                result.append(alias)
        return result


def _as_list(outputs: Any) -> list[Any]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def wrap(
    fn: BoxedCallable,
    name: str,
    kind: str,
    pair: GraphPair | None,
    num_user_outputs: int | None,
    mutated_indices: Sequence[int],
) -> BoxedCallable:
    """``fn`` run through CUDA graphs, with the static inputs AOTAutograd names (parameters and
    buffers) read in place."""
    if kind not in GRAPHED_KINDS:
        return fn
    return GraphedCallable(fn, name, kind, pair or GraphPair(), num_user_outputs, _static_input_indices(kind),
                           mutated_indices)


def _static_input_indices(kind: str) -> list[int]:
    """AOTAutograd's parameters and buffers among the forward's inputs (``torch.compile`` only)."""
    if kind == "backward":
        return []
    context = torch._guards.TracingContext.try_get()
    metadata = getattr(context, "fw_metadata", None)
    return list(getattr(metadata, "static_input_indices", None) or [])
