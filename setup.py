"""Only the optional C kernels live here; everything else is in pyproject.toml.

`coulisse.models._int8` fuses the per-token activation quantization around the int8 GEMM and what follows
the fp32 GEMMs (bias, GELU, residual + LayerNorm) (src/coulisse/models/_int8.c), and runs the self-attention
of packed sequences (_attention.c). It is optional: without a C compiler the install still succeeds and
coulisse runs the same arithmetic with PyTorch ops, more slowly. It is built with OpenMP where the
compiler has it (its work then runs on PyTorch's own OpenMP threads), else with POSIX threads.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP = ["-fopenmp"]


class BuildExt(build_ext):
    """Build with OpenMP; where the compiler or its runtime lacks it, build again without."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:  # CompileError, LinkError: the compiler's own message was printed
            if not set(OPENMP) & set(ext.extra_compile_args):
                raise
            self.announce(f"coulisse: building {ext.name} without OpenMP ({error})", level=3)
            ext.extra_compile_args = [a for a in ext.extra_compile_args if a not in OPENMP]
            ext.extra_link_args = [a for a in ext.extra_link_args if a not in OPENMP]
            super().build_extension(ext)


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "coulisse.models._int8",
            ["src/coulisse/models/_int8.c", "src/coulisse/models/_attention.c",
             "src/coulisse/models/_int8_gemm.c"],
            depends=["src/coulisse/models/_kernels.h"],
            extra_compile_args=["-O3", "-pthread", "-std=c11", *OPENMP],
            extra_link_args=["-pthread", *OPENMP],
            libraries=["m"],
            optional=True,
        )
    ],
)
