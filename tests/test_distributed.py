"""``backend="ait"`` under PyTorch's distributed engine: DDP and FSDP2 on two gloo processes (CPU),
and functional collectives inside compiled graphs. Each test spawns its two ranks; a rank writes
what it saw to a JSON file that the test reads back.

On a GPU machine the same functions run on NCCL with world size 1 (``test_*_nccl``)."""

from __future__ import annotations

import json
import os
import socket
import traceback
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from ait_dynamo.kernels.runtime import triton_runs_on

STEPS = 3
# gloo ranks compute on CPU tensors: generated kernels there only under Triton's interpreter (CI);
# elsewhere ait runs them unfused by design, and only the results are checked
FUSING_ON_CPU = triton_runs_on("cpu")
DDP_DIM = 256  # 3 MiB of parameters


class Block(nn.Module):
    """A transformer block with attention (q·kᵀ, softmax, ·v written out), LayerNorms and an MLP."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, backend: str, body: Callable[[int, int], dict[str, Any]], out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    result: dict[str, Any]
    try:
        if backend == "nccl":  # the same bodies on the GPU: every tensor they make is a CUDA tensor
            torch.cuda.set_device(rank)
            torch.set_default_device(f"cuda:{rank}")
        dist.init_process_group(backend, rank=rank, world_size=world)
        result = body(rank, world)
    except Exception:  # noqa: BLE001 - reported to the test through the file
        result = {"error": traceback.format_exc()}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    with open(f"{out}.{rank}.json", "w") as file:
        json.dump(result, file)


def _spawn(body: Callable[[int, int], dict[str, Any]], tmp_path, world: int = 2, backend: str = "gloo") -> list[dict]:
    out = str(tmp_path / "rank")
    mp.start_processes(_worker, args=(world, _free_port(), backend, body, out), nprocs=world, join=True,
                       start_method="spawn")
    results = []
    for rank in range(world):
        with open(f"{out}.{rank}.json") as file:
            result = json.load(file)
        assert "error" not in result, f"rank {rank}:\n{result['error']}"
        results.append(result)
    return results


def _metrics() -> dict[str, Any]:
    from ait_dynamo import metrics

    return {
        "graphs": [{"kind": g.kind, "kernels": len(g.kernels), "externs": g.externs, "fallback": g.fallback_reason,
                    "rewrites": g.rewrites} for g in metrics.compiled_graphs],
    }


def _train(model: nn.Module, wrap: Callable[[nn.Module], nn.Module], rank: int, compiled: bool) -> list[torch.Tensor]:
    torch.manual_seed(100 + rank)  # each rank its own data
    dim = model.norm1.normalized_shape[0]
    wrapped = wrap(model)
    step_fn = torch.compile(wrapped, backend="ait") if compiled else wrapped
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        x = torch.randn(4, 8, dim)
        loss = step_fn(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return [p.detach() for p in model.parameters()]


def _compare(eager: list[torch.Tensor], compiled: list[torch.Tensor]) -> float:
    def full(t: torch.Tensor) -> torch.Tensor:
        return t.full_tensor() if hasattr(t, "full_tensor") else t

    return max(float((full(a) - full(b)).abs().max()) for a, b in zip(eager, compiled))


def _ddp_body(rank: int, world: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    eager_model = Block(DDP_DIM)
    compiled_model = Block(DDP_DIM)
    compiled_model.load_state_dict(eager_model.state_dict())
    # 1 MiB buckets (Dynamo's DDP optimizer wants no smaller: its first bucket is 1 MiB) over
    # 3 MiB of parameters: it splits the graph at the bucket boundaries
    wrap = lambda m: DDP(m, bucket_cap_mb=1)  # noqa: E731
    eager = _train(eager_model, wrap, rank, compiled=False)
    compiled = _train(compiled_model, wrap, rank, compiled=True)
    return {"max_diff": _compare(eager, compiled), **_metrics()}


def _fsdp_body(rank: int, world: int) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard

    def wrap(model: nn.Module) -> nn.Module:
        for layer in (model.qkv, model.proj, model.fc1, model.fc2):
            fully_shard(layer)
        fully_shard(model)
        return model

    torch.manual_seed(0)
    eager_model = Block()
    compiled_model = Block()
    compiled_model.load_state_dict(eager_model.state_dict())
    eager = _train(eager_model, wrap, rank, compiled=False)
    compiled = _train(compiled_model, wrap, rank, compiled=True)
    return {"max_diff": _compare(eager, compiled), **_metrics()}


def _collectives_body(rank: int, world: int) -> dict[str, Any]:
    import torch.distributed._functional_collectives as funcol

    group = dist.group.WORLD

    def program(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        summed = funcol.all_reduce(x * 2.0 + 1.0, "sum", group)
        gathered = funcol.all_gather_tensor(x.sin(), 0, group)
        scattered = funcol.reduce_scatter_tensor(gathered.cos(), "sum", 0, group)
        loss = ((summed.relu() * w).sum() + scattered.sum()) * 0.5
        return loss, summed, gathered

    torch.manual_seed(rank)
    x = torch.randn(6, 5)
    w = torch.randn(6, 5, requires_grad=True)
    expected = program(x, w)
    expected[0].backward()
    expected_grad = w.grad.clone()
    w.grad = None
    actual = torch.compile(program, backend="ait")(x, w)
    actual[0].backward()
    diffs = [float((a - e).abs().max()) for a, e in zip(actual, expected)] + [float((w.grad - expected_grad).abs().max())]
    return {"max_diff": max(diffs), **_metrics()}


@pytest.mark.slow
def test_ddp_training_matches_eager_and_each_piece_goes_through_ait(tmp_path):
    for result in _spawn(_ddp_body, tmp_path):
        assert result["max_diff"] < 1e-5, result["max_diff"]
        graphs = result["graphs"]
        forwards = [g for g in graphs if g["kind"] == "forward"]
        backwards = [g for g in graphs if g["kind"] == "backward"]
        # Dynamo's DDP optimizer split the block at the bucket boundaries: several pieces, each one
        # partitioned (a forward and a backward) and fused by ait
        assert len(forwards) >= 2 and len(backwards) == len(forwards), [g["kind"] for g in graphs]
        assert all(g["fallback"] is None for g in graphs)
        if FUSING_ON_CPU:
            assert sum(g["kernels"] for g in graphs) >= 4


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="on the CUDA machine (H200, torch 2.11) rank 1 of FSDP2 over gloo "
                    "died with SIGSEGV; test_on_nccl_with_world_size_1[fsdp2] runs FSDP2 there")
def test_fsdp2_training_matches_eager(tmp_path):
    for result in _spawn(_fsdp_body, tmp_path):
        assert result["max_diff"] < 1e-5, result["max_diff"]
        assert result["graphs"] and all(g["fallback"] is None for g in result["graphs"])
        assert any(g["kernels"] for g in result["graphs"])


def test_functional_collectives_are_externs_and_not_recomputed(tmp_path):
    for result in _spawn(_collectives_body, tmp_path):
        assert result["max_diff"] < 1e-5, result["max_diff"]
        forward = next(g for g in result["graphs"] if g["kind"] == "forward")
        backward = next(g for g in result["graphs"] if g["kind"] == "backward")
        collectives = [op for op in forward["externs"] if "_c10d_functional" in op]
        assert any("all_reduce" in op for op in collectives) and any("wait_tensor" in op for op in collectives)
        assert any("all_gather_into_tensor" in op for op in collectives)
        assert any("reduce_scatter_tensor" in op for op in collectives)
        # the backward reads the saved all_reduce result: it never runs a collective again
        assert not [op for op in backward["externs"] if "_c10d_functional" in op], backward["externs"]
        if FUSING_ON_CPU:
            assert forward["kernels"] >= 2  # work before the collectives and after their waits, apart


@pytest.mark.gpu
@pytest.mark.parametrize("body", [_ddp_body, _fsdp_body, _collectives_body], ids=["ddp", "fsdp2", "collectives"])
def test_on_nccl_with_world_size_1(body, tmp_path):
    (result,) = _spawn(body, tmp_path, world=1, backend="nccl")
    assert result["max_diff"] < 1e-4, result["max_diff"]
    assert result["graphs"] and all(g["fallback"] is None for g in result["graphs"])


@pytest.mark.slow
def test_ddp_benchmark_runs_on_gloo_and_checks_each_backend_against_eager(tmp_path):
    from benchmarks import ddp_bench

    status = ddp_bench.main(["--out", str(tmp_path), "--device", "cpu", "--model", "tiny", "--world", "2",
                             "--batch", "2", "--backends", "ait", "--quick"])
    assert status == 0
    with open(tmp_path / "ddp_bench.json") as file:
        rows = {r["backend"]: r for r in json.load(file)["results"]}
    assert list(rows) == ["eager", "ait"]  # eager first: the reference
    ait = rows["ait"]
    assert ait["error"] is None and ait["step_ms"] > 0 and ait["images_per_s"] > 0
    assert ait["loss_rel_diff"] < 1e-4 and ait["update_rel_error"] < 1e-4
    assert "| ait |" in (tmp_path / "ddp_bench.md").read_text()


def test_ddp_benchmark_rejects_bad_arguments(capsys):
    from benchmarks import ddp_bench

    with pytest.raises(SystemExit):
        ddp_bench.parse_args(["--out", "x", "--device", "cpu", "--backends", "ait,tensorrt"])
    assert "unknown backend(s) tensorrt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ddp_bench.parse_args(["--out", "x", "--device", "cpu", "--backends", "ait-cudagraphs"])
    assert "CUDA-graph backends need --device cuda" in capsys.readouterr().err
