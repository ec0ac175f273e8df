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
from ait_dynamo.partitioners import partition_function
from ait_dynamo.passes.decompositions import decomposition_table


def aot_compilers(config: AitConfig) -> dict[str, Any]:
    """Keyword arguments for AOTAutograd: our compilers, partitioner and decompositions."""
    return {
        "fw_compiler": functools.partial(compile_graph, config=config, kind="forward"),
        "bw_compiler": functools.partial(compile_graph, config=config, kind="backward"),
        "inference_compiler": functools.partial(compile_graph, config=config, kind="inference"),
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
    return _aot_backend(config)(gm, example_inputs)
