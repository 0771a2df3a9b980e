"""Builds the native modules: every ``_*.c`` file under the packages is one extension module named
by its path (``spans/_otlp_wire.c`` -> ``spans._otlp_wire``). Metadata lives in pyproject.toml."""

from pathlib import Path

from setuptools import Extension, setup

PACKAGES = ("spans", "collector", "mesh")


def native_modules() -> list[Extension]:
    sources = sorted(path for package in PACKAGES for path in Path(package).rglob("_*.c"))
    return [
        Extension(
            ".".join(source.with_suffix("").parts),
            [str(source)],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
        for source in sources
    ]


setup(ext_modules=native_modules())
