"""Dynamo's accuracy rule, as every check in the project applies it: the numerics guard
(``verify.py``), the OpInfo sweep (``tests/opinfo_sweep.py``) and the benchmark harness.

``torch._dynamo.utils.same``: a result passes if it is close to the expected one within ``tol``,
or no further from the float64 reference than the expected one is (by RMSE, with a multiplier).
Shapes, dtypes and the structure of nested outputs must agree too (``same`` would broadcast).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

# ``same``'s tolerance per dtype, as dynamo's benchmark harness uses it
TOLERANCE = {torch.float64: 1e-7, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def tolerance(dtype: torch.dtype) -> float:
    return TOLERANCE.get(dtype, 1e-4)


def _as_float64(reference: Any) -> Any:
    """A reference computed from float64 inputs may hold the graph's own casts (to fp16, say);
    ``same`` uses it as the float64 reference only in float64."""
    if isinstance(reference, torch.Tensor) and reference.is_floating_point():
        return reference.double()
    return reference


def structure_agrees(expected: Any, actual: Any) -> bool:
    """Same nesting, and tensors of the same shape, dtype and device at the same places."""
    flat_e, flat_a = tree_flatten(expected)[0], tree_flatten(actual)[0]
    if len(flat_e) != len(flat_a):
        return False
    for e, a in zip(flat_e, flat_a):
        if isinstance(e, torch.Tensor) != isinstance(a, torch.Tensor):
            return False
        if isinstance(e, torch.Tensor) and (e.shape != a.shape or e.dtype != a.dtype or e.device != a.device):
            return False
    return True


def agrees(expected: Any, actual: Any, reference: Any = None, tol: float = 1e-4) -> bool:
    """Whether ``actual`` passes dynamo's rule against ``expected`` and the float64 ``reference``
    (``None``: against ``expected`` alone). Outputs may be nested."""
    from torch._dynamo.utils import same

    if not structure_agrees(expected, actual):
        return False
    if reference is not None:
        flat_r, spec = tree_flatten(reference)
        if not structure_agrees_loosely(expected, reference):
            reference = None
        else:
            reference = tree_unflatten([_as_float64(r) for r in flat_r], spec)
    try:
        return bool(same(expected, actual, reference if reference is not None else expected, tol=tol,
                         equal_nan=True, log_error=lambda *args, **kwargs: None))
    except (AssertionError, RuntimeError, TypeError):
        return False


def structure_agrees_loosely(expected: Any, reference: Any) -> bool:
    """The reference has the same nesting and shapes (its dtypes are float64's)."""
    flat_e, flat_r = tree_flatten(expected)[0], tree_flatten(reference)[0]
    return len(flat_e) == len(flat_r) and all(
        not isinstance(e, torch.Tensor) or (isinstance(r, torch.Tensor) and r.shape == e.shape)
        for e, r in zip(flat_e, flat_r))
