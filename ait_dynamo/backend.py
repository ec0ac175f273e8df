"""The ``torch.compile`` backend ``"ait"`` and the AOTAutograd wiring shared by the public API.

Registered through the ``torch_dynamo_backends`` entry point, so ``torch.compile(model,
backend="ait")`` works without importing this package. Dynamo passes ``mode=`` and ``options=``
of ``torch.compile`` as keyword arguments.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

from torch import fx
from torch._dynamo.backends.common import aot_autograd

from ait_dynamo.compile import compile_graph
from ait_dynamo.config import AitConfig
from ait_dynamo.cuda_graphs import GraphPair
from ait_dynamo.partitioners import partition_function
from ait_dynamo.passes.decompositions import decomposition_table


def aot_compilers(config: AitConfig, graph_pair: GraphPair | None = None) -> dict[str, Any]:
    """Keyword arguments for AOTAutograd: our compilers, partitioner and decompositions.

    With ``config.cuda_graphs``, the graphs compiled through one set of compilers share
    ``graph_pair`` (one per Dynamo graph: a memory pool, and the forward's saved values)."""
    if config.cuda_graphs and graph_pair is None:
        graph_pair = GraphPair()
    compile_kind = functools.partial(compile_graph, config=config, graph_pair=graph_pair)
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
    config = AitConfig.create(options, mode)
    if config.cuda_graphs:  # a fresh pair of graphs (and memory pool) per Dynamo graph
        return aot_autograd(**aot_compilers(config), keep_inference_input_mutations=True)(gm, example_inputs)
    return _aot_backend(config)(gm, example_inputs)
