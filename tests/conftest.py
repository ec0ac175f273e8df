import os
import sys

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)  # tests import `utils` directly
sys.path.append(os.path.dirname(_HERE))  # the seed models from `benchmarks.models`, after installed packages


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
