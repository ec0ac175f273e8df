"""One GEMM's oneDNN / ATen time ratio measured two ways: alone (the same GEMM repeated on the
same operands, the two forms in alternating blocks) and in its model's sequence of GEMMs (every
GEMM of the sequence in one form, then every one in the other, alternating which goes first;
each call timed where it runs). The sequences are the GEMMs of the CPU main job's workloads at
scale small: simple_mlp (batch 256 and batch 8) and the encoder block (8 x 64 tokens). ATen's form
is ``addmm`` with the activation in place, as ait's graph runs it; oneDNN's is
``mkldnn._linear_pointwise`` with the activation folded. No ait code runs here.

    python benchmarks/results/cpu-epyc/onednn_sequence/alone_vs_sequence.py
"""

from __future__ import annotations

import statistics
import time

import torch

LINEAR = torch.ops.mkldnn._linear_pointwise.default
SEQUENCES = {
    "simple_mlp, batch 256": [(256, 256, 1024, "gelu"), (256, 1024, 256, None)],
    "simple_mlp, batch 8": [(8, 256, 1024, "gelu"), (8, 1024, 256, None)],
    "encoder block, 8 x 64 tokens": [(512, 256, 768, None), (512, 256, 256, None), (512, 256, 1024, "relu"),
                                     (512, 1024, 256, None)],
}


def forms(rows: int, inner: int, cols: int, activation: str | None):
    x, weight, bias = torch.randn(rows, inner), torch.randn(cols, inner) * 0.05, torch.randn(cols)
    in_place = {"gelu": torch.ops.aten.gelu_, "relu": torch.ops.aten.relu_, None: lambda t: t}[activation]
    attribute = {"gelu": ("gelu", "none"), "relu": ("relu", ""), None: ("none", "")}[activation]
    return (lambda: in_place(torch.addmm(bias, x, weight.t())),
            lambda: LINEAR(x, weight, bias, attribute[0], [], attribute[1]))


def block(fn, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def alone(aten, onednn, rounds: int = 40) -> float:
    for fn in (aten, onednn):
        block(fn, 5)
    count = max(1, int(0.002 / block(aten, 3)))
    ratios = []
    for index in range(rounds):
        if index % 2:
            a, o = block(aten, count), block(onednn, count)
        else:
            o, a = block(onednn, count), block(aten, count)
        ratios.append(o / a)
    return statistics.median(ratios)


def in_sequence(pairs, rounds: int = 40) -> list[float]:
    times = ([[] for _ in pairs], [[] for _ in pairs])
    for index in range(rounds):
        for which in ((0, 1) if index % 2 == 0 else (1, 0)):
            for position, pair in enumerate(pairs):
                start = time.perf_counter()
                pair[which]()
                if index >= 4:  # warm-up rounds
                    times[which][position].append(time.perf_counter() - start)
    return [statistics.median(o) / statistics.median(a) for a, o in zip(*times)]


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with torch.no_grad():
        for name, layers in SEQUENCES.items():
            pairs = [forms(*layer) for layer in layers]
            sequenced = in_sequence(pairs)
            for layer, pair, ratio in zip(layers, pairs, sequenced):
                rows, inner, cols, activation = layer
                print(f"{name:30s} {rows:4d}x{inner:4d}x{cols:4d} {activation or '-':5s} "
                      f"alone {alone(*pair):.3f}  in sequence {ratio:.3f}", flush=True)


if __name__ == "__main__":
    main()
