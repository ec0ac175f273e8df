"""Training batch norm updates its running statistics in place (passes/batch_norm_stats.py): the
forward calls ATen's in-place op on the module's buffers instead of the functional op's clones
plus copies back, the layers' step counters are incremented by one ``_foreach_add_``, and the
results stay those of eager."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ait_dynamo import metrics
from utils import needs_cpu_triton, train_side_by_side

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = needs_cpu_triton if DEVICE == "cpu" else []

FUNCTIONAL = "aten._native_batch_norm_legit_functional.default"
# What writes the running statistics in place: on CUDA passes/batch_norm_split.py's statistics op
# (tests/test_batch_norm_split.py), elsewhere ATen's in-place batch norm.
IN_PLACE = ("aten.batch_norm_gather_stats_with_counts.default" if DEVICE == "cuda"
            else "aten._native_batch_norm_legit.default")
# channels-last input, where Triton runs: our statistics kernels write them
# (kernels/batch_norm_channels.py, tests/test_batch_norm_channels.py)
CHANNEL_STATISTICS = "ait_dynamo.kernels.batch_norm_channels.channel_statistics"


class TwoBlocks(nn.Module):
    def __init__(self, channels: int = 6):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class ReadsStatisticsAfter(nn.Module):
    """Reads a running statistic after the batch norm that updates it: eager's value there is
    the updated one, so the update must not move (the rewrite must refuse)."""

    def __init__(self, channels: int = 5):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.bn.running_mean.view(1, -1, 1, 1)


def _forward_externs() -> list[str]:
    return [e for g in metrics.compiled_graphs if g.kind == "forward" for e in g.externs]


def _train_side_by_side(model: nn.Module, shape: tuple[int, ...], steps: int = 3, **options) -> nn.Module:
    """``steps`` SGD steps of ``model`` in eager and compiled with ait; asserts outputs, gradients,
    parameters and buffers agree, returns the compiled copy."""
    return train_side_by_side(model.to(DEVICE), lambda: torch.randn(*shape, device=DEVICE), steps=steps,
                              buffer_tolerance=dict(rtol=1e-5, atol=1e-6), **options)


@pytest.fixture
def no_tf32():
    """Full float32 convolutions: with TF32 (cuDNN's default) a channels-last convolution and
    eager's NCHW one round differently (about 2e-4 relative on the H200:
    benchmarks/results/nvidia-h200/diagnose_1203/bn_channels_last_tf32_65efbd7.txt), and three SGD
    steps carry that past this test's tolerance (it failed so on the H200 at 9f27232, layout "on")."""
    cudnn = torch.backends.cudnn
    # The flags() context: an earlier test may have frozen the global flags (torch.testing's
    # disable_global_flags), and then setting them raises.
    with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                     allow_tf32=False):
        yield


@pytest.mark.parametrize("layout", ["on", "off"])
def test_running_statistics_are_updated_in_place_and_match_eager(layout, no_tf32):
    torch.manual_seed(0)
    _train_side_by_side(TwoBlocks(), (3, 6, 5, 7), channels_last=layout)
    externs = _forward_externs()
    assert FUNCTIONAL not in externs and externs.count(CHANNEL_STATISTICS if layout == "on" else IN_PLACE) == 2, externs
    # Nothing is copied back: the step counters are incremented in place too, both in one op.
    assert "aten.copy_.default" not in externs and externs.count("aten._foreach_add_.Scalar") == 1, externs


def test_a_statistic_read_after_its_update_keeps_the_functional_form():
    torch.manual_seed(0)
    _train_side_by_side(ReadsStatisticsAfter(), (4, 5, 3, 3))
    externs = _forward_externs()
    assert FUNCTIONAL in externs and IN_PLACE not in externs, externs


def test_another_partitioner_keeps_the_functional_form_and_stays_right():
    """Only our partitioner points the backward at the buffers; with functorch's default
    partition the new statistics are saved for the backward, and the forward keeps its copies."""
    torch.manual_seed(0)
    _train_side_by_side(TwoBlocks(), (2, 6, 4, 4), partitioner="default")
    externs = _forward_externs()
    assert FUNCTIONAL in externs and IN_PLACE not in externs, externs


def test_two_forwards_before_their_backwards():
    """The backward reads the buffers, which the second forward updates again before the first
    backward runs: harmless, since training-mode batch norm backward never reads them."""
    torch.manual_seed(0)
    eager = TwoBlocks().to(DEVICE).train()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, backend="ait")
    xs = [torch.randn(2, 6, 5, 5, device=DEVICE) for _ in range(2)]
    for fn in (eager, compiled):
        losses = [fn(x).square().mean() for x in xs]
        sum(losses).backward()
    for (name, p), q in zip(eager.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
    for (name, b), c in zip(eager.named_buffers(), twin.buffers()):
        torch.testing.assert_close(c, b, rtol=1e-5, atol=1e-6, msg=name)
    externs = _forward_externs()
    assert IN_PLACE in externs or CHANNEL_STATISTICS in externs, externs  # the layout is the device's choice


class CumulativeAverage(nn.Module):
    """``momentum=None``: the running statistics are a cumulative average, whose factor eager
    computes from ``num_batches_tracked`` (read after the increment), so the counter is read."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(channels, momentum=None)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(torch.relu(self.bn1(x)))


def test_step_counters_read_by_a_cumulative_average_stay_right():
    torch.manual_seed(0)
    _train_side_by_side(CumulativeAverage(), (3, 4, 5, 5), steps=3)
