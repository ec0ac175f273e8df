"""AitConfig: defaults, environment, options; clear errors for unknown names and bad values."""

from __future__ import annotations

import pytest
import torch

from ait_dynamo import AitConfig


def test_defaults_and_options():
    config = AitConfig.create({"fusion": False, "partitioner": "default"}, environ={})
    assert config.fusion is False and config.partitioner == "default"
    assert AitConfig.create(environ={}).partitioner == "min_cut"


def test_environment_then_options():
    env = {"AIT_DEBUG_DIR": "/tmp/x", "AIT_FUSION": "0", "AIT_FALLBACK_OPS": "aten.mm,aten.bmm.default", "AIT_OTHER": "1"}
    config = AitConfig.create(environ=env)
    assert config.debug_dir == "/tmp/x" and config.fusion is False
    assert config.fallback_ops == ("aten.bmm.default", "aten.mm")
    assert config.is_fallback(torch.ops.aten.mm.default) and not config.is_fallback(torch.ops.aten.bmm.out)
    assert AitConfig.create({"fusion": True}, environ=env).fusion is True


@pytest.mark.parametrize(
    "options, words",
    [
        ({"fusoin": True}, ["'fusoin'", "fusion", "debug_dir", "partitioner", "fallback_ops"]),
        ({"partitioner": "greedy"}, ["'partitioner'", "min_cut", "default"]),
        ({"fusion": "perhaps"}, ["'fusion'"]),
        ({"fallback_ops": ["aten.not_an_op"]}, ["aten.not_an_op"]),
        ({"fallback_ops": ["aten.mm.nope"]}, ["aten.mm.nope", "default"]),
        ({"fallback_ops": 3}, ["fallback_ops"]),
    ],
)
def test_bad_options_name_the_option(options, words):
    with pytest.raises(ValueError) as raised:
        AitConfig.create(options, environ={})
    for word in words:
        assert word in str(raised.value)


def test_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="AIT_PARTITIONER"):
        AitConfig.create(environ={"AIT_PARTITIONER": "nope"})


def test_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        AitConfig.create(mode="turbo", environ={})


def test_torch_compile_reports_unknown_option():
    compiled = torch.compile(lambda x: x + 1, backend="ait", options={"no_such_option": 1})
    with pytest.raises(Exception) as raised:
        compiled(torch.randn(3))
    assert "no_such_option" in str(raised.value) and "valid options" in str(raised.value)


def test_frozen():
    config = AitConfig.create(environ={})
    with pytest.raises(Exception):
        config.fusion = False  # type: ignore[misc]
    assert config.replace(fusion=False).fusion is False
    with pytest.raises(ValueError, match="unknown option"):
        config.replace(bogus=1)
