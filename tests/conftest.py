import os
import sys

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # tests import `utils` directly
sys.path.append(os.path.dirname(_HERE))  # the seed models from `benchmarks.models`, after installed packages


def pytest_configure(config):
    """Under the interpreter, every kernel runs as several programs (at most 64 elements along
    x each, unless AIT_INTERPRET_MAX_XBLOCK says otherwise): a program that overwrites what a
    later one still reads then gives a wrong value here, as it may on a GPU. The interpreter's
    own default (65536) ran the test of ResNet-50's fused batch norm backward as one program,
    and the in-place bug it had only showed on the H200. Costs the suite about a third more time."""
    if "AIT_INTERPRET_MAX_XBLOCK" not in os.environ:
        from ait_dynamo.kernels import runtime

        runtime.INTERPRETER_MAX_XBLOCK = 64


@pytest.fixture(autouse=True)
def _fresh_state(tmp_path, monkeypatch):
    """Each test starts with no dynamo cache, zeroed metrics and its own ait disk cache."""
    import ait_dynamo
    from ait_dynamo import cache

    monkeypatch.setenv("AIT_CACHE_DIR", str(tmp_path / "ait_cache"))
    torch._dynamo.reset()
    cache.clear_memory_cache()
    ait_dynamo.metrics.reset()
    yield
    torch._dynamo.reset()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def generated_kernels_must_not_fail():
    """A generated kernel that fails falls back to ATen with a warning: in a test of generated
    kernels that is an error. A module asks for it with
    ``pytestmark = pytest.mark.usefixtures("generated_kernels_must_not_fail")``."""
    from ait_dynamo.kernels import runtime

    runtime.BROKEN.clear()
    yield
    assert not runtime.BROKEN, f"generated kernels failed: {runtime.BROKEN}"
