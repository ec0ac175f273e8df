import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Every (case, backend) compiles from scratch: no dynamo cache entry of another backend in the way."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
