"""Block configurations of the GEMM template: a short list suited to Hopper (sm90) plus small
ones for small problems, a heuristic that picks one without measuring, and the constexprs a
launch passes.

A configuration is (BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages), and a seventh
element 1 for the persistent TMA path (one program per SM looping over the tiles, operands
through tensor descriptors), which kernels generated with that path offer besides. With
``autotune`` on CUDA, ``kernels/autotune.py`` measures the candidates once per kernel, device
and size bucket and keeps the fastest on disk; otherwise :func:`heuristic` stands.
"""

from __future__ import annotations

import torch

GemmConfig = tuple[int, ...]

# Large tiles for compute-bound shapes (128x256 with 8 warps is the usual best bf16 tile on an
# H100/H200 without warp specialisation), square 128x128 tiles with deeper pipelines, and smaller
# ones for skinny or small problems, where large tiles leave most of the 132 SMs idle.
HOPPER_CONFIGS: tuple[GemmConfig, ...] = (
    (128, 256, 64, 8, 8, 3),
    (256, 128, 64, 8, 8, 3),
    (128, 128, 64, 8, 8, 4),
    (128, 128, 64, 8, 4, 4),
    (128, 128, 32, 8, 4, 4),
    (64, 128, 64, 8, 4, 4),
    (128, 64, 64, 8, 4, 4),
    (64, 64, 64, 8, 4, 3),
    (64, 64, 32, 8, 4, 4),
    (32, 64, 64, 8, 4, 4),
    (16, 64, 128, 8, 4, 3),
)
# The persistent TMA path's candidates (Hopper, 2-D products with 16-byte aligned rows: see
# codegen_gemm.tma_operand): the large tiles of the list above, walked by one program per SM. Not
# measured on the GPU yet: the choice by measurement (kernels/autotune.py) takes one only where it
# is faster, and the numerics check of kernels/gemm_tuning.py judges the chosen configuration.
PERSISTENT_CONFIGS: tuple[GemmConfig, ...] = (
    (128, 256, 64, 8, 8, 3, 1),
    (128, 128, 64, 8, 8, 4, 1),
    (128, 128, 64, 8, 4, 4, 1),
    (64, 128, 64, 8, 4, 4, 1),
)
# fp32 operands take twice the shared memory per element: halve BLOCK_K of the large tiles
_FP32_K = 32
SMS = 132  # H100 / H200; a larger grid than this fills the GPU either way
_SHARED_BYTES = 227 * 1024  # sm90's shared memory per block


def _pow2_at_least_16(n: int, cap: int) -> int:
    return max(16, min(cap, 1 << max(0, int(n) - 1).bit_length()))


def interpreter_config(m: int, n: int, k: int) -> GemmConfig:
    """Triton's interpreter runs one program at a time with numpy: one tile per problem where it
    is small, so that the CPU tests stay quick; tl.dot needs every block dim >= 16."""
    return _pow2_at_least_16(m, 64), _pow2_at_least_16(n, 64), _pow2_at_least_16(k, 64), 8, 1, 1


def is_persistent(config: GemmConfig) -> bool:
    return len(config) > 6 and bool(config[6])


def fits(config: GemmConfig, dtype: torch.dtype) -> bool:
    """Whether the pipeline's shared memory (num_stages copies of an A and a B tile) fits sm90."""
    block_m, block_n, block_k, stages = config[0], config[1], config[2], config[5]
    size = 4 if dtype == torch.float32 else 2
    return stages * (block_m + block_n) * block_k * size <= _SHARED_BYTES


def candidates(batch: int, m: int, n: int, k: int, dtype: torch.dtype, persistent: bool = False) -> list[GemmConfig]:
    """The configurations worth measuring for this problem: the heuristic's first, then the
    others that fit shared memory and are not much larger than the problem (``persistent``: the
    kernel has the persistent TMA path, whose configurations come last)."""
    first = heuristic(batch, m, n, k, dtype)
    result = [first]
    for config in HOPPER_CONFIGS + (PERSISTENT_CONFIGS if persistent else ()):
        if dtype == torch.float32 and config[2] > _FP32_K:
            config = (config[0], config[1], _FP32_K) + config[3:]
        block_m, block_n = config[0], config[1]
        if block_m > 2 * max(m, 16) or block_n > 2 * max(n, 16) or not fits(config, dtype):
            continue
        if config not in result:
            result.append(config)
    return result


def heuristic(batch: int, m: int, n: int, k: int, dtype: torch.dtype) -> GemmConfig:
    """A configuration without measuring: the largest tile that still gives every SM a program
    (a 128x256 tile on an 8192-square problem gives 2048 programs), else smaller tiles."""
    for config in HOPPER_CONFIGS:
        if dtype == torch.float32 and config[2] > _FP32_K:
            config = (config[0], config[1], _FP32_K) + config[3:]
        block_m, block_n = config[0], config[1]
        programs = batch * -(-m // block_m) * -(-n // block_n)
        if programs >= SMS and fits(config, dtype):
            return config
    return (32, 64, 32, 8, 4, 4) if dtype == torch.float32 else (32, 64, 64, 8, 4, 4)


def constexprs(config: GemmConfig, k: int, upcast: bool, programs: int | None = None) -> dict[str, int]:
    """The template's constexprs for a configuration, in the kernel's signature order.
    ``programs``: for a kernel generated with the persistent path, the programs launched when
    ``config`` takes it (otherwise 1: the constexpr is unused)."""
    block_m, block_n, block_k, group_m = config[:4]
    values = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": group_m,
              "EVEN_K": int(k % block_k == 0), "UPCAST": int(upcast)}
    if programs is not None:
        values["PERSISTENT"] = int(is_persistent(config))
        values["NUM_PROGRAMS"] = programs if is_persistent(config) else 1
    return values
