"""Host time of the calls the generated wrapper makes per step, in the forms it could write them
(kernels/source.py, kernels/launch_site.py). Best of 5 repeats of 100,000 calls. From the
repository root:

    python benchmarks/results/cpu-triton-interpreter/host_calls/host_calls.py
"""

import platform
import timeit

import torch

from ait_dynamo.kernels import launch_site


def per_call_us(fn) -> float:
    return min(timeit.repeat(fn, number=100_000, repeat=5)) * 10


def main() -> None:
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {torch.get_num_threads()} threads")
    x = torch.randn(8, 64, 768)
    calls = {
        "x.view([512, 768])": lambda: x.view([512, 768]),
        "x.view(512, 768)": lambda: x.view(512, 768),
        "x.permute([0, 2, 1])": lambda: x.permute([0, 2, 1]),
        "x.permute(0, 2, 1)": lambda: x.permute(0, 2, 1),
        "x.expand([8, 64, 768])": lambda: x.expand([8, 64, 768]),
        "x.expand(8, 64, 768)": lambda: x.expand(8, 64, 768),
    }
    for name, fn in calls.items():
        print(f"{name}: {per_call_us(fn):.2f} us")

    tensors = [torch.empty(16) for _ in range(5)]
    args = tensors + [3, 7]

    def generators(args, checked, seeds):  # the key as it was before 27f69d3
        return (tuple(args[i].data_ptr() & 15 for i in checked),
                tuple((args[i] == 1, args[i] % 16 == 0) for i in seeds))

    print(f"specialization key, generators, 5 checked tensors: {per_call_us(lambda: generators(args, (0, 1, 2, 3, 4), ())):.2f} us")
    print("specialization key, list comprehensions, 5 checked tensors: "
          f"{per_call_us(lambda: launch_site._specialization_key(args, (0, 1, 2, 3, 4), ())):.2f} us")


if __name__ == "__main__":
    main()
