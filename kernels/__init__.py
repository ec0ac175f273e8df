"""Code generation: wrapper modules (and, with the fusion work, Triton kernels) from templates."""
