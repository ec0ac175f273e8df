"""Attention → scaled_dot_product_attention before AOTAutograd (``passes/attention.py``): exact
results forward and backward in the layouts real models use, the SDPA op in the compiled graphs
(forward and backward), and a reason for every attention left alone."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ait_dynamo import metrics
from utils import check_compiled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _short_sequences_rewritten_too(monkeypatch):
    """The tests' sequences are short (5-9 keys): here they are rewritten like long ones, except
    in the test of the option that keeps short ones (``attention_min_keys``)."""
    monkeypatch.setenv("AIT_ATTENTION_MIN_KEYS", "0")


def _rewrites() -> list[str]:
    lines: list[str] = []
    for graph in metrics.compiled_graphs:
        for line in graph.rewrites:
            if line not in lines:
                lines.append(line)
    return lines


def _sdpa_in(kind: str) -> bool:
    """Whether the last forward (or inference) graph, or the last backward, runs SDPA."""
    kinds = ("forward", "inference") if kind == "forward" else (kind,)
    graphs = [g for g in metrics.compiled_graphs if g.kind in kinds]
    return bool(graphs) and any("scaled_dot_product" in op for op in graphs[-1].externs)


def _no_score_products() -> None:
    for graph in metrics.compiled_graphs:
        assert "aten.bmm.default" not in graph.externs, f"{graph.name} still multiplies q by k: {graph.externs}"


class HeadsAttention(nn.Module):
    """q, k, v as [batch, heads, L, E] from one projection, in the spellings of timm, BERT, GPT-2,
    T5 and Llama eager attention."""

    def __init__(self, style: str, dim: int = 32, heads: int = 4, kv_heads: int | None = None, p: float = 0.0):
        super().__init__()
        self.style, self.heads, self.kv_heads = style, heads, kv_heads or heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * self.kv_heads * self.head_dim)
        self.out = nn.Linear(dim, dim)
        self.p = p

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = self.kv(x).view(b, n, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.kv_heads != self.heads:  # Llama's repeat_kv
            repeat = self.heads // self.kv_heads
            k = k[:, :, None].expand(b, self.kv_heads, repeat, n, self.head_dim).reshape(b, self.heads, n, self.head_dim)
            v = v[:, :, None].expand(b, self.kv_heads, repeat, n, self.head_dim).reshape(b, self.heads, n, self.head_dim)
        scale = self.head_dim ** -0.5
        if self.style == "sdpa":  # what the others are rewritten to
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0, scale=scale)
            return self.out(y.transpose(1, 2).reshape(b, n, -1))
        if self.style == "timm":
            q = q * scale
            attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        elif self.style == "bert":
            scores = torch.matmul(q, k.transpose(2, 3)) * scale
            if mask is not None:
                scores = scores + mask
            attn = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        elif self.style == "gpt2_inf":
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            attn = nn.functional.softmax(scores, dim=-1).type(v.dtype)
        elif self.style == "gpt2_finfo":
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            scores = torch.where(causal, scores, torch.finfo(scores.dtype).min)
            attn = scores.softmax(-1)
        elif self.style == "t5":
            scores = torch.matmul(q, k.transpose(3, 2))  # no scaling
            if mask is not None:
                scores += mask
            attn = F.softmax(scores.float(), dim=-1).type_as(scores)
        else:
            raise ValueError(self.style)
        attn = F.dropout(attn, p=self.p, training=self.training)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, -1)
        return self.out(y)


@pytest.mark.parametrize("style", ["timm", "bert", "gpt2_inf", "t5"])
@pytest.mark.parametrize("train", [False, True], ids=["inference", "training"])
def test_attention_layouts_become_sdpa(style, train):
    torch.manual_seed(0)
    model = HeadsAttention(style).to(DEVICE).train(train)
    x = torch.randn(2, 7, 32, device=DEVICE, requires_grad=train)
    mask = None
    if style in ("bert", "t5"):
        mask = torch.randn(2, 1, 1, 7, device=DEVICE) if style == "bert" else torch.randn(1, 4, 7, 7, device=DEVICE)
    check_compiled(model, x, mask, backward=train)
    assert any("-> scaled_dot_product_attention" in line for line in _rewrites()), _rewrites()
    _no_score_products()
    assert _sdpa_in("forward")
    if train:
        assert _sdpa_in("backward"), "the backward must be SDPA's own"


@pytest.mark.parametrize("mask_shape", [(7,), (), (7, 7)], ids=["keys", "scalar", "square"])
def test_masks_of_fewer_dims_than_the_scores(mask_shape):
    """SDPA reads a mask's last two sizes: a [keys] or 0-d mask, which broadcasts to the scores
    in eager, made AOTAutograd fail on the rewritten graph (found by tests/test_random_transformers.py)."""
    torch.manual_seed(0)
    model = HeadsAttention("bert").to(DEVICE)
    mask = torch.randn(mask_shape, device=DEVICE)
    check_compiled(model, torch.randn(2, 7, 32, device=DEVICE, requires_grad=True), mask)
    assert any("-> scaled_dot_product_attention" in line for line in _rewrites()), _rewrites()
    assert _sdpa_in("forward") and _sdpa_in("backward")
    # CUDA's memory-efficient SDPA raises on a mask broadcast over the keys (the H200, torch 2.11)
    written_out = any("mask written out over the keys" in line for line in _rewrites())
    assert written_out == (mask_shape == ()), _rewrites()


@pytest.mark.parametrize("mask_kind", ["per_query_column", "transposed"])
def test_masks_not_contiguous_over_the_keys_are_written_out(mask_kind):
    torch.manual_seed(0)
    model = HeadsAttention("bert").to(DEVICE)
    mask = torch.randn(7, 1, device=DEVICE) if mask_kind == "per_query_column" else torch.randn(7, 7, device=DEVICE).t()
    check_compiled(model, torch.randn(2, 7, 32, device=DEVICE, requires_grad=True), mask)
    assert any("mask written out over the keys" in line for line in _rewrites()), _rewrites()
    assert _sdpa_in("forward") and _sdpa_in("backward")


def test_grouped_query_attention_llama():
    torch.manual_seed(0)
    model = HeadsAttention("bert", heads=4, kv_heads=2).to(DEVICE)
    check_compiled(model, torch.randn(2, 6, 32, device=DEVICE, requires_grad=True))
    assert any("scale 0.353553" in line for line in _rewrites()), _rewrites()
    assert _sdpa_in("backward")


def test_a_finite_fill_is_kept_with_its_reason():
    torch.manual_seed(0)
    model = HeadsAttention("gpt2_finfo").to(DEVICE)
    check_compiled(model, torch.randn(2, 5, 32, device=DEVICE, requires_grad=True))
    assert any("kept: masked with the finite value" in line for line in _rewrites()), _rewrites()
    assert not _sdpa_in("forward")


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` called on one input (check_compiled makes an fp64 copy of it)."""

    def __init__(self, **call: object):
        super().__init__()
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.call = call

    def forward(self, x: torch.Tensor, *masks: torch.Tensor):
        keywords = dict(self.call)
        for name, mask in zip(("key_padding_mask", "attn_mask"), masks):
            keywords[name] = mask
        result = self.mha(x, x, x, **keywords)
        return result if keywords.get("average_attn_weights") is False else result[0]


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention(need_weights):
    torch.manual_seed(0)
    x = torch.randn(3, 9, 32, device=DEVICE, requires_grad=True)
    check_compiled(SelfAttention(need_weights=need_weights).to(DEVICE), x)
    if need_weights:  # the weights are computed, then unused: the product still becomes SDPA
        assert any("-> scaled_dot_product_attention (scale 0.353553)" in line for line in _rewrites()), _rewrites()
        assert _sdpa_in("forward") and _sdpa_in("backward")
        _no_score_products()


def test_multihead_attention_with_masks():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32, device=DEVICE, requires_grad=True)
    padding = torch.zeros(2, 6, device=DEVICE)
    padding[1, 4:] = float("-inf")
    additive = torch.randn(6, 6, device=DEVICE)
    check_compiled(SelfAttention().to(DEVICE), x, padding, additive)
    assert any("additive mask" in line for line in _rewrites()), _rewrites()
    assert _sdpa_in("backward")


def test_returned_weights_keep_the_attention():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32, device=DEVICE, requires_grad=True)
    check_compiled(SelfAttention(average_attn_weights=False).to(DEVICE), x)
    assert any("kept:" in line and "also used outside the attention" in line for line in _rewrites()), _rewrites()
    assert not _sdpa_in("forward")


def test_dropout_in_training_follows_fallback_random():
    torch.manual_seed(0)
    model = HeadsAttention("timm", p=0.3).to(DEVICE).train()
    x = torch.randn(2, 7, 32, device=DEVICE, requires_grad=True)
    check_compiled(model, x)  # eager's dropout stream: kept, results equal eager's under one seed
    assert any("kept: attention dropout in training" in line for line in _rewrites()), _rewrites()
    torch._dynamo.reset()
    metrics.reset()
    compiled = torch.compile(model, backend="ait", options={"fallback_random": False})
    out = compiled(x)
    out.sum().backward()
    assert any("dropout 0.3" in line for line in _rewrites()), _rewrites()
    assert out.shape == (2, 7, 32) and torch.isfinite(x.grad).all()


def test_dynamic_sequence_length():
    torch.manual_seed(0)
    model = HeadsAttention("bert").to(DEVICE)
    for n in (5, 8, 11):
        check_compiled(model, torch.randn(2, n, 32, device=DEVICE, requires_grad=True), dynamic=True)
        assert _sdpa_in("forward"), _rewrites()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision(dtype):
    if DEVICE == "cpu" and dtype == torch.float16:
        pytest.skip("CPU half matmuls are slow and not what users run")
    torch.manual_seed(0)
    model = HeadsAttention("bert").to(DEVICE, dtype)
    # Judged against eager running SDPA, the kernels the rewrite picks: on CUDA in fp16, flash
    # attention's backward rounds differently from the unfused matmuls (on the H200, 2 of 1024
    # gradient elements 12 ulps off where the unfused chain was within 2), as it does in eager.
    sdpa = HeadsAttention("sdpa").to(DEVICE, dtype)
    sdpa.load_state_dict(model.state_dict())
    check_compiled(model, torch.randn(2, 8, 32, device=DEVICE, dtype=dtype, requires_grad=True), eager=sdpa)
    assert _sdpa_in("forward") and _sdpa_in("backward")


def test_the_option_turns_it_off():
    torch.manual_seed(0)
    model = HeadsAttention("timm").to(DEVICE)
    check_compiled(model, torch.randn(2, 7, 32, device=DEVICE, requires_grad=True),
                   options={"rewrite_attention": False})
    assert not _rewrites() and not _sdpa_in("forward")


def test_few_keys_keep_the_explicit_attention(monkeypatch):
    """attention_min_keys (64 by default): Swin's 49-key windows keep bmm + softmax + bmm (SDPA's
    fused kernels were slower there on the H200), with the reason; 65 keys are rewritten."""
    monkeypatch.delenv("AIT_ATTENTION_MIN_KEYS")
    torch.manual_seed(0)
    model = HeadsAttention("timm").to(DEVICE)
    check_compiled(model, torch.randn(2, 49, 32, device=DEVICE, requires_grad=True))
    assert not _sdpa_in("forward") and not _sdpa_in("backward")
    assert any("49 keys, at most attention_min_keys=64" in line for line in _rewrites()), _rewrites()
    metrics.reset()
    check_compiled(model, torch.randn(2, 65, 32, device=DEVICE, requires_grad=True))
    assert _sdpa_in("forward") and _sdpa_in("backward")


def test_rewrites_reach_the_fusion_report_and_debug_dir(tmp_path):
    torch.manual_seed(0)
    model = HeadsAttention("timm").to(DEVICE)
    check_compiled(model, torch.randn(2, 7, 32, device=DEVICE), backward=False, options={"debug_dir": str(tmp_path)})
    graph = metrics.compiled_graphs[-1]
    report = open(os.path.join(tmp_path, graph.name, "fusion_report.txt")).read()
    assert "rewrites before AOTAutograd" in report and "-> scaled_dot_product_attention" in report
    (folder,) = [f for f in os.listdir(tmp_path) if f.startswith("pre_autograd_")]  # numbered per process
    dumps = sorted(os.listdir(tmp_path / folder))
    assert dumps == ["00-pre_dispatch.txt", "01-fuse_attention.txt"]
    assert "scaled_dot_product_attention" in (tmp_path / folder / "01-fuse_attention.txt").read_text()


def test_intact_sdpa_stays_and_no_softmax_means_no_retrace(monkeypatch):
    from ait_dynamo.passes import pre_autograd

    calls = []
    original = pre_autograd._retrace
    monkeypatch.setattr(pre_autograd, "_retrace", lambda *a: calls.append(1) or original(*a))
    q = torch.randn(2, 4, 6, 8, device=DEVICE, requires_grad=True)
    check_compiled(lambda a: F.scaled_dot_product_attention(a, a * 2, a.sin()), q)
    assert _sdpa_in("forward") and _sdpa_in("backward")
    check_compiled(lambda a: (a @ a.transpose(-1, -2)).relu(), q)
    assert calls == [] and not _rewrites()


transformers = pytest.importorskip("transformers") if os.environ.get("AIT_TEST_TRANSFORMERS") else None
if transformers is not None:
    from benchmarks.model_suite import import_transformers

    transformers = import_transformers()  # the Hub's `kernels`, not this repository's kernels/ folder


@pytest.mark.skipif(transformers is None, reason="set AIT_TEST_TRANSFORMERS=1 with transformers installed")
@pytest.mark.parametrize("family", ["bert", "gpt2", "llama", "t5"])
def test_hugging_face_eager_attention(family):
    from transformers import (BertConfig, BertModel, GPT2Config, GPT2Model, LlamaConfig, LlamaModel, T5Config,
                              T5EncoderModel)

    torch.manual_seed(0)
    if family == "bert":
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                     attn_implementation="eager"))
    elif family == "gpt2":
        model = GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=4, attn_implementation="eager"))
    elif family == "llama":
        model = LlamaModel(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                       intermediate_size=64, attn_implementation="eager"))
    else:
        model = T5EncoderModel(T5Config(d_model=32, d_kv=8, num_layers=2, num_heads=4, d_ff=64,
                                        attn_implementation="eager"))
    model = model.to(DEVICE).eval()
    ids = torch.randint(0, 100, (2, 9), device=DEVICE)
    check_compiled(lambda i: model(input_ids=i).last_hidden_state, ids, backward=False)
    assert sum("-> scaled_dot_product_attention" in line for line in _rewrites()) == 2, _rewrites()


def _attention_over_a_cache_that_starts_empty(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """GPT-2 / Llama under Hugging Face's ``DynamicCache`` on the first step: k and v are
    ``cat([empty cache, new], -2)``, a copy whose only reader is the attention."""
    q, k, v = (x @ w).view(2, 7, 3, 2, 8).permute(2, 0, 3, 1, 4)
    empty = torch.tensor([], dtype=x.dtype, device=x.device)
    keys, values = torch.cat([empty, k], dim=-2), torch.cat([empty, v], dim=-2)
    return F.scaled_dot_product_attention(q, keys, values, is_causal=True).transpose(1, 2).reshape(2, 7, 16)


@pytest.mark.parametrize("backward", [False, True], ids=["inference", "training"])
def test_a_cat_onto_an_empty_cache_is_no_copy(backward):
    torch.manual_seed(0)
    x, w = torch.randn(2, 7, 16, device=DEVICE), torch.randn(16, 48, device=DEVICE)
    if backward:
        x.requires_grad_()
        w.requires_grad_()
    check_compiled(_attention_over_a_cache_that_starts_empty, x, w, backward=backward)
    for graph in metrics.compiled_graphs:
        assert "aten.cat.default" not in graph.externs and "aten.cat.default" not in graph.fused_ops, (
            graph.name, graph.externs)
    assert _sdpa_in("forward")


def test_a_cat_of_one_non_empty_input_that_others_read_is_a_contiguous_copy():
    """Read by a view as well: the copy stays (contiguous, as cat gives it), as a fused clone."""
    def fn(x):
        empty = torch.tensor([], dtype=x.dtype, device=x.device)
        return torch.cat([empty, x.transpose(0, 1)], dim=0).view(-1) * 2

    check_compiled(fn, torch.randn(5, 3, device=DEVICE), backward=False)
    graph = metrics.compiled_graphs[-1]
    assert "aten.cat.default" not in graph.externs and "aten.clone.default" in graph.fused_ops, graph.externs
