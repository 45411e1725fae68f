"""Only the optional C kernels live here; everything else is in pyproject.toml.

`coulisse.models._int8` fuses the per-token activation quantization around the int8 GEMM
(src/coulisse/models/_int8.c). It is optional: without a C compiler the install still succeeds and
coulisse runs the same arithmetic with PyTorch ops, more slowly.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "coulisse.models._int8",
            ["src/coulisse/models/_int8.c"],
            extra_compile_args=["-O3", "-pthread", "-std=c11"],
            extra_link_args=["-pthread"],
            libraries=["m"],
            optional=True,
        )
    ]
)
