"""Offsets into a tensor at a kernel's iteration indices (``kernels/codegen.py``): per dim the
stride times the index, or the flat index itself where the strides are contiguous over the
iteration space, which keeps Triton's loads vectorised."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ait_dynamo.passes.sizes import same_size, static_int

if TYPE_CHECKING:
    from ait_dynamo.kernels.codegen import KernelWriter


class Access:
    """Offsets into one tensor at the iteration indices, given the tensor's dim map."""

    def __init__(self, kernel: "KernelWriter", tensor: str, meta: torch.Tensor, dim_map: tuple):
        self.kernel, self.tensor, self.meta, self.dim_map = kernel, tensor, meta, dim_map

    def _stride(self, k: int) -> str:
        stride = self.meta.stride()[k]
        value = static_int(stride)
        if value is not None:
            return str(value)
        return self.kernel.int_arg(("stride", self.kernel.param_source[self.tensor], k))

    def offset(self) -> tuple[str, bool, bool]:
        """(offset expression, uses x dims, uses r dims)."""
        kernel = self.kernel
        covered = {m: k for k, m in enumerate(self.dim_map) if m is not None}
        x_dims = [d for d in kernel.x_dims if d in covered]
        r_dims = [d for d in kernel.r_dims if d in covered]
        parts: list[str] = []
        inner: Any = 1
        uses_x = uses_r = False
        r_fast = bool(r_dims) and set(r_dims) == set(kernel.r_nonunit) and all(
            same_size(self.meta.stride()[covered[d]], kernel.r_contig[d]) for d in r_dims
        )
        if r_fast:
            parts.append("rindex")
            inner = kernel.rnumel_product
            uses_r = True
        else:
            for d in r_dims:
                stride = self._stride(covered[d])
                if stride != "0":  # an expanded dim adds nothing to the address
                    parts.append(scaled_index(f"r{d}", stride))
                    kernel.used_dims.add(("r", d))
                    uses_r = True
        x_fast = bool(x_dims) and set(x_dims) == set(kernel.x_nonunit) and (r_fast or not r_dims) and all(
            same_size(self.meta.stride()[covered[d]], times(kernel.x_contig[d], inner)) for d in x_dims
        )
        if x_fast:
            parts.append("xindex" if inner == 1 else f"xindex * {kernel.rnumel_name}")
            uses_x = True
        else:
            for d in x_dims:
                stride = self._stride(covered[d])
                if stride != "0":
                    parts.append(scaled_index(f"x{d}", stride))
                    kernel.used_dims.add(("x", d))
                    uses_x = True
        return (" + ".join(parts) or "0"), uses_x, uses_r


class UnitStride:
    """Layout of a 1-D contiguous value (an arange): its linear index is the element index."""

    @staticmethod
    def stride() -> tuple[int]:
        return (1,)


def hashable_size(size: Any) -> Any:
    """A SymInt is not hashable: key sizes by their sympy expression."""
    return size.node.expr if isinstance(size, torch.SymInt) else size


def scaled_index(index: str, stride: str) -> str:
    return index if stride == "1" else f"{index} * {stride}"


def times(a: Any, b: Any) -> Any:
    if isinstance(b, int) and b == 1:
        return a
    return a * b
