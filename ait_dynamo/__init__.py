"""ait_dynamo: a torch.compile / AOTAutograd backend.

    torch.compile(model, backend="ait", options={...})
    aot_function(fn, fw_compiler=ait_compile, bw_compiler=ait_compile)
    memory_efficient_fusion(fn_or_module)
    lower(model, example_inputs, LowerSettings(...))   # explicit split: _run_on_acc_N / _run_on_gpu_N
    @fallback                                          # a function or module class that stays eager
"""

from ait_dynamo import metrics
from ait_dynamo._version import __version__
from ait_dynamo.api import memory_efficient_fusion
from ait_dynamo.backend import ait_backend
from ait_dynamo.compile import ait_compile
from ait_dynamo.config import AitConfig
from ait_dynamo.lowering import LowerSettings, fallback, lower
from ait_dynamo.partitioners import min_cut_rematerialization_partition

__all__ = [
    "AitConfig",
    "LowerSettings",
    "fallback",
    "lower",
    "__version__",
    "ait_backend",
    "ait_compile",
    "memory_efficient_fusion",
    "metrics",
    "min_cut_rematerialization_partition",
]
