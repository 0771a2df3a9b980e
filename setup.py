"""Builds the native modules. Metadata lives in pyproject.toml.

- Every ``_*.c`` file under the packages is one extension module named by its path
  (``spans/_otlp_wire.c`` -> ``spans._otlp_wire``): byte-level work written in C.
- Every ``.py`` module with a ``.pxd`` beside it is compiled by Cython: the proxy's per-request path
  (``mesh/relay.py``, ``mesh/http1.py`` and the policy objects they call). The ``.py`` stays plain,
  readable Python; its ``.pxd`` declares the classes as extension types with typed fields, so
  attribute reads and method calls between them are C struct reads and C calls instead of
  interpreted bytecode (measured: the interpreter was most of the proxy's user-space time).
  Annotations in the ``.py`` files are for readers; only the ``.pxd`` types count.
"""

from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

PACKAGES = ("spans", "collector", "mesh")
C_FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]


def native_modules() -> list[Extension]:
    sources = sorted(path for package in PACKAGES for path in Path(package).rglob("_*.c"))
    # depends: a header beside a module (its C API, shared tables) rebuilds the module when it changes
    return [
        Extension(
            ".".join(source.with_suffix("").parts), [str(source)],
            depends=sorted(str(header) for header in source.parent.glob("*.h")), extra_compile_args=C_FLAGS,
        )
        for source in sources
    ]  # fmt: skip


def cython_modules() -> list[Extension]:
    sources = sorted(pxd.with_suffix(".py") for package in PACKAGES for pxd in Path(package).rglob("*.pxd"))
    # include_dirs: a .pxd may declare a C API by its header's path from the repository root (spans/otlp_spans.h)
    extensions = [
        Extension(".".join(source.with_suffix("").parts), [str(source)], include_dirs=["."], extra_compile_args=["-O2"])
        for source in sources
    ]
    return cythonize(
        extensions,
        language_level=3,
        compiler_directives={"annotation_typing": False, "binding": False},
        quiet=True,
    )


setup(ext_modules=native_modules() + cython_modules())
