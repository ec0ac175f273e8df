"""OpInfo differential suite: every op of PyTorch's ``op_db`` through ``torch.compile(backend="ait")``,
forward and gradients, against eager and an fp64 reference by dynamo's accuracy rule
(the engine is ``tests/opinfo_sweep.py``).

Selections (environment variables):

- default (CI): each op's first sample, as OpInfo makes it and a non-contiguous copy, float32
  with gradients (ops without a floating dtype: their first integer/bool dtype);
- ``AIT_OPINFO=full``: every sample of every op (as given and non-contiguous);
- ``AIT_OPINFO_SAMPLES=N``: the first N samples;
- ``AIT_OPINFO_DTYPES=float32,float16,bfloat16``: dtypes to sweep; gradients are taken in float32;
- ``AIT_OPINFO_OPS=add,softmax``: only these ops;
- ``AIT_OPINFO_SUMMARY=path.md``: write the summary (counts per status, every non-pass sample).

``test_op_with_symbolic_sizes`` compiles the first samples of the ops whose kernels take symbolic
sizes with ``dynamic=True`` (``AIT_OPINFO_SYMBOLIC_SAMPLES``; the sweep's ``--dynamic`` does it for
any op).

A sample whose value is off is a failure, always. An op may raise under ait only when it is
listed in ``EXPECTED_FAILURES`` with its reason: the user then gets an error, never a wrong value.
Ops whose results are unspecified (uninitialised memory, random draws) are reported apart.
"""

from __future__ import annotations

import os

import pytest
import torch

import opinfo_sweep as sweep

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
_MODE = os.environ.get("AIT_OPINFO", "default")
if _MODE not in ("default", "full"):
    raise ValueError(f"AIT_OPINFO={_MODE!r}: use 'default' or 'full'")
SAMPLES = None if _MODE == "full" else int(os.environ.get("AIT_OPINFO_SAMPLES", "1"))
DTYPES = [getattr(torch, name) for name in os.environ.get("AIT_OPINFO_DTYPES", "float32").split(",") if name]
_ONLY = {name for name in os.environ.get("AIT_OPINFO_OPS", "").split(",") if name}

# op → why ait raises on it (the program stops with an error instead of computing a value).
EXPECTED_FAILURES: dict[str, str] = {}

_OPS = [op for op in sweep.all_ops() if not _ONLY or sweep.op_name(op) in _ONLY]
_RESULTS: list[sweep.OpSummary] = []


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    path = os.environ.get("AIT_OPINFO_SUMMARY")
    if path and _RESULTS:
        title = f"OpInfo sweep on {DEVICE} ({_MODE}, {', '.join(str(d).replace('torch.', '') for d in DTYPES)})"
        with open(path, "w") as file:
            file.write(sweep.summarise(_RESULTS, title))


@pytest.fixture(autouse=True)
def _quiet_dynamo():
    import logging

    torch._logging.set_logs(dynamo=logging.ERROR, aot=logging.ERROR)  # graph breaks are expected here
    yield
    torch._logging.set_logs()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("op", _OPS, ids=sweep.op_name)
def test_op(op, dtype):
    chosen = sweep.pick_dtype(op, DEVICE, dtype)
    if chosen is None:
        pytest.skip(f"{sweep.op_name(op)} has no {dtype} kernel on {DEVICE}")
    gradients = dtype == torch.float32
    try:
        summary = sweep.run_op(op, DEVICE, chosen, gradients, SAMPLES)
    except Exception as error:  # noqa: BLE001 - OpInfo cannot make this op's samples here
        pytest.skip(f"{sweep.op_name(op)}: its samples cannot be made on {DEVICE} ({type(error).__name__}: {error})")
    _RESULTS.append(summary)
    name = summary.op
    wrong = [o for o in summary.outcomes if o.status == sweep.MISMATCH]
    assert not wrong, "\n".join(f"{name} sample {o.sample} ({o.layout}): {o.detail}" for o in wrong)
    raised = [o for o in summary.outcomes if o.status == sweep.RAISED]
    if name in EXPECTED_FAILURES:
        return
    assert not raised, "\n".join(f"{name} sample {o.sample} ({o.layout}) raised: {o.detail}" for o in raised)


# Ops whose kernels take symbolic sizes as bounds, shifts or operands under dynamic shapes
# (tests/test_dynamic_shapes.py): their first samples compiled with ``dynamic=True``, gradients too.
_SYMBOLIC_OPS = ("cat", "nn.functional.pad.constant", "nn.functional.max_pool2d", "div.floor_rounding",
                 "nn.functional.layer_norm", "softmax")
_SYMBOLIC_SAMPLES = int(os.environ.get("AIT_OPINFO_SYMBOLIC_SAMPLES", "3"))


@pytest.mark.parametrize("op", [op for op in _OPS if sweep.op_name(op) in _SYMBOLIC_OPS], ids=sweep.op_name)
def test_op_with_symbolic_sizes(op):
    chosen = sweep.pick_dtype(op, DEVICE, torch.float32)
    summary = sweep.run_op(op, DEVICE, chosen, True, _SYMBOLIC_SAMPLES, dynamic=True)
    wrong = [o for o in summary.outcomes if o.status in (sweep.MISMATCH, sweep.RAISED)]
    assert not wrong, "\n".join(f"{summary.op} sample {o.sample} ({o.layout}): {o.status} {o.detail}" for o in wrong)
    assert any(o.kernels for o in summary.outcomes), "no sample ran a generated kernel"
