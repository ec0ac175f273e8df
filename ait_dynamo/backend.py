"""The ``torch.compile`` backend ``"ait"`` and the AOTAutograd wiring shared by the public API.

Registered through the ``torch_dynamo_backends`` entry point, so ``torch.compile(model,
backend="ait")`` works without importing this package. Dynamo passes ``mode=`` and ``options=``
of ``torch.compile`` as keyword arguments.
"""

from __future__ import annotations

import functools
import itertools
import logging
import warnings
from typing import Any, Callable, Mapping, Sequence

import torch
import torch._dynamo.exc
from torch import fx
from torch._dynamo.backends.common import aot_autograd

from ait_dynamo import metrics
from ait_dynamo.compile import compile_graph
from ait_dynamo.config import AitConfig
from ait_dynamo.cuda_graphs import GraphPair
from ait_dynamo.debug import DebugDir
from ait_dynamo.devices import for_devices
from ait_dynamo.partitioners import partition_function
from ait_dynamo.passes.decompositions import decomposition_table
from ait_dynamo.passes.graph_utils import count_ops
from ait_dynamo.passes.pipeline import PRE_AUTOGRAD_PASSES
from ait_dynamo.passes.pre_autograd import rewrite_before_autograd


def aot_compilers(config: AitConfig, graph_pair: GraphPair | None = None,
                  rewrites: tuple[str, ...] = ()) -> dict[str, Any]:
    """Keyword arguments for AOTAutograd: our compilers, partitioner and decompositions.

    With ``config.cuda_graphs``, the graphs compiled through one set of compilers share
    ``graph_pair`` (one per Dynamo graph: a memory pool, and the forward's saved values).
    ``rewrites``: what the pre-autograd rewrites did to this Dynamo graph (for the reports)."""
    if config.cuda_graphs and graph_pair is None:
        graph_pair = GraphPair()
    compile_kind = functools.partial(compile_graph, config=config, graph_pair=graph_pair, rewrites=rewrites)
    return {
        "fw_compiler": functools.partial(compile_kind, kind="forward"),
        "bw_compiler": functools.partial(compile_kind, kind="backward"),
        "inference_compiler": functools.partial(compile_kind, kind="inference"),
        "partition_fn": partition_function(config),
        "decompositions": decomposition_table(config),
    }


@functools.lru_cache(maxsize=32)
def _aot_backend(config: AitConfig) -> Callable[..., Any]:
    # Input mutations stay inside the inference graph (as copy_ at its end) so that they run
    # in the compiled code rather than in an epilogue outside it.
    return aot_autograd(**aot_compilers(config), keep_inference_input_mutations=True)


def ait_backend(
    gm: fx.GraphModule,
    example_inputs: Sequence[Any],
    mode: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """``torch.compile`` backend: dynamo FX graph → AOTAutograd → ait-compiled graphs."""
    config = for_devices(AitConfig.create(options, mode), example_inputs)
    ops = count_ops(gm)
    if ops < config.min_acc_module_size:
        log.info("a Dynamo graph of %d ops (< min_acc_module_size %d) runs in eager", ops, config.min_acc_module_size)
        metrics.record_eager_graph()
        return gm.forward
    debug = DebugDir(config.debug_dir, f"pre_autograd_{next(_dynamo_graphs):03d}") if config.debug_dir else None
    rewritten, rewrites = rewrite_before_autograd(gm, example_inputs, config, PRE_AUTOGRAD_PASSES,
                                                  dump=debug.write if debug else None)
    if rewritten is not gm:
        try:
            return _through_autograd(rewritten, example_inputs, config, rewrites)
        except torch._dynamo.exc.TorchDynamoException:
            raise  # Dynamo's own control flow (restart analysis, skip frame)
        except Exception as error:  # noqa: BLE001 - a rewrite is an optimisation: compile the graph as given
            note = f"the rewritten graph failed in AOTAutograd ({type(error).__name__}: {error})"
            warnings.warn(f"ait_dynamo: {note}; compiling Dynamo's graph without the rewrites", RuntimeWarning,
                          stacklevel=2)
            log.debug("AOTAutograd failure of a rewritten graph", exc_info=True)
            rewrites = [*rewrites, f"rewrites dropped: {note}"]
    try:
        return _through_autograd(gm, example_inputs, config, rewrites)
    except (torch._dynamo.exc.TorchDynamoException, *_DYNAMO_BREAKS_ON):
        raise
    except Exception as error:  # noqa: BLE001 - any compile failure must degrade, not crash
        warnings.warn(f"ait_dynamo: compiling a Dynamo graph failed in AOTAutograd ({type(error).__name__}: "
                      f"{error}); running it in eager", RuntimeWarning, stacklevel=2)
        log.debug("AOTAutograd failure", exc_info=True)
        metrics.record_eager_graph()
        return gm.forward


def _through_autograd(gm: fx.GraphModule, example_inputs: Sequence[Any], config: AitConfig,
                      rewrites: Sequence[str]) -> Any:
    if config.cuda_graphs or rewrites:
        # a fresh pair of graphs (and memory pool) per Dynamo graph; its own rewrite notes
        compilers = aot_compilers(config, rewrites=tuple(rewrites))
        return aot_autograd(**compilers, keep_inference_input_mutations=True)(gm, example_inputs)
    return _aot_backend(config)(gm, example_inputs)


# fake-tensor failures (data-dependent output sizes, ops without a fake kernel) that Dynamo turns
# into a graph break at the op, compiling the rest, when a backend raises them: better than
# running the whole graph in eager
_DYNAMO_BREAKS_ON: tuple[type[BaseException], ...] = tuple(getattr(torch._dynamo.exc, "exceptions_allowed_to_be_fallback", ()))
_dynamo_graphs = itertools.count()
log = logging.getLogger("ait_dynamo")
