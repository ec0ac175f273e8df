"""The online numerics guard (option ``verify``, ``AIT_VERIFY=1``).

On the first call of a compiled graph, the generated wrapper runs each fusion group twice more
through ATen, on the same inputs, before its kernel: once in the inputs' own dtypes (what the
fallback would return) and once with floating-point inputs in float64 (the reference). After the
kernel, its outputs are judged by dynamo's accuracy rule (``torch._dynamo.utils.same``: close to
ATen, or no further from float64 than ATen is, by RMSE), plus equal shapes and dtypes. A kernel
past tolerance is retired, so that its group runs through ATen from then on; that call
returns ATen's values; one warning names the graph, the kernel, its ops and the error; and the
graph's fusion report gets a line. The wrapper then swaps in its plain ``call``: later calls
cost nothing.

Groups that draw random numbers in the kernel (``fallback_random=False``) are not compared: the
kernel's Philox stream differs from ATen's by design.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Sequence

import torch

from ait_dynamo import accuracy

log = logging.getLogger("ait_dynamo")

def _fp64(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().to(torch.float64)
    return value


def compare(actual: torch.Tensor, expected: torch.Tensor, reference: torch.Tensor | None) -> str | None:
    """``None`` if ``actual`` passes dynamo's rule against ``expected`` (and the float64
    ``reference``); else what is wrong."""
    if not isinstance(actual, torch.Tensor) or not isinstance(expected, torch.Tensor):
        return None if actual == expected else f"{actual!r} != {expected!r}"
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return f"{tuple(actual.shape)} {actual.dtype} where ATen gives {tuple(expected.shape)} {expected.dtype}"
    if expected.numel() == 0 or accuracy.agrees(expected, actual, reference, accuracy.tolerance(expected.dtype)):
        return None
    if expected.is_floating_point():
        difference = (actual.double() - expected.double()).abs()
        difference = torch.where(torch.isnan(difference), torch.full_like(difference, float("inf")), difference)
        worst = int(torch.argmax(difference).item())
        return (f"max |kernel - ATen| {difference.flatten()[worst].item():.3g} at flat index {worst} "
                f"(kernel {actual.flatten()[worst].item():.6g}, ATen {expected.flatten()[worst].item():.6g})")
    return f"{int((actual != expected).sum())} of {expected.numel()} elements differ from ATen"


class Verifier:
    """The guard of one compiled graph: the wrapper's first call reports to it."""

    def __init__(self, graph: str, ops: dict[str, list[str]], random_groups: set[str], record: Any,
                 report: Any = None, debug: Any = None):
        self.graph = graph
        self.ops = ops  # group name → its aten ops
        self.random_groups = random_groups
        self.record = record
        self.report = report
        self.debug = debug
        self.verified: list[str] = []
        self.failures: dict[str, str] = {}

    def reference(self, group: str, aten: Any, inputs: Sequence[Any]) -> tuple[Any, Any] | None:
        """ATen's outputs for the group in its own dtypes and in float64, before the kernel runs
        (a kernel may write its output into a dying input's buffer)."""
        if group in self.random_groups:
            return None
        expected = aten(*inputs)
        try:
            reference = aten(*[_fp64(value) for value in inputs])
        except Exception as error:  # noqa: BLE001 - an op without a float64 kernel: judge against ATen alone
            log.debug("verify %s %s: no float64 reference (%s)", self.graph, group, error)
            reference = None
        return expected, reference

    def check(self, site: Any, group: str, references: tuple[Any, Any] | None, outputs: tuple) -> tuple:
        """The kernel's ``outputs`` if they pass, else ATen's (and the group's launch site,
        ``kernels/launch_site.py``, is retired)."""
        if references is None:
            return outputs
        expected, reference = references
        for index, (actual, wanted) in enumerate(zip(outputs, expected)):
            error = compare(actual, wanted, reference[index] if reference is not None else None)
            if error is not None:
                self._retire(site, group, f"output {index}: {error}")
                return site.as_traced(expected)
        self.verified.append(group)
        return outputs

    def _retire(self, site: Any, group: str, error: str) -> None:
        site.retire()
        self.failures[group] = error
        ops = ", ".join(self.ops.get(group, []))
        warnings.warn(
            f"ait_dynamo: verify: {self.graph} {group} ({ops}) differs from ATen: {error}; "
            "it runs through ATen from now on",
            RuntimeWarning,
            stacklevel=3,
        )

    def finish(self) -> None:
        """After the first call: the results go to the metrics and the fusion report."""
        self.record.verified = list(self.verified)
        self.record.verify_failures = dict(self.failures)
        lines = [f"verify (first call): {len(self.verified)} kernels agree with ATen"
                 + (f", {len(self.failures)} differ and run through ATen" if self.failures else "")]
        lines += [f"  {group}: {error}" for group, error in self.failures.items()]
        log.info("%s %s", self.graph, "\n".join(lines))
        if self.report is not None:
            self.report.verification = lines
            if self.debug:
                from ait_dynamo.fusion_report import emit_report

                emit_report(self.report, self.debug)
