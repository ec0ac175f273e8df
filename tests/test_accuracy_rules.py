"""The rules of tests/utils.py that every differential test leans on: the distribution rule
accepts rounding noise as large as eager's and rejects a lost term, a wrong mask and TF32-sized
errors that the elementwise rule would also reject."""

from __future__ import annotations

import pytest
import torch

from utils import assert_close_to_reference


def _gemm_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fp64 reference, eager-like fp16 result, another fp16 rounding of the same sum): a K = 512
    product whose fp16 operands were rounded from fp64 in two slightly different ways."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(64, 512, generator=generator, dtype=torch.float64)
    b = torch.randn(512, 48, generator=generator, dtype=torch.float64)
    reference = a @ b
    eager = (a.half().double() @ b.half().double()).half()
    nudged = a * (1 + 2e-4 * torch.randn(a.shape, generator=generator, dtype=torch.float64))
    other = (nudged.half().double() @ b.half().double()).half()
    return reference, eager, other


def test_distribution_rule_accepts_rounding_noise_like_eagers():
    reference, eager, other = _gemm_case()
    assert_close_to_reference([other], [eager], [reference], "output", rule="distribution")


@pytest.mark.parametrize("corruption", ["lost_term", "masked_row", "tf32"])
def test_distribution_rule_rejects_wrong_values(corruption):
    reference, eager, other = _gemm_case()
    wrong = other.clone()
    if corruption == "lost_term":
        wrong[3, 7] -= 1.0  # one product of two unit normals left out of one sum
    elif corruption == "masked_row":
        wrong[-1] = 0
    else:  # operands rounded to 10 mantissa bits: TF32 where float32 was asked for
        wrong = (reference * (1 + 1e-3 * torch.randn(reference.shape, dtype=torch.float64))).half()
    with pytest.raises(AssertionError):
        assert_close_to_reference([wrong], [eager], [reference], "output", rule="distribution")


def test_unknown_rule_is_refused():
    reference, eager, other = _gemm_case()
    with pytest.raises(AssertionError, match="unknown rule"):
        assert_close_to_reference([other], [eager], [reference], "output", rule="loose")
