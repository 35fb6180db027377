"""Install-time build of logitlab's native kernels; the project metadata is in pyproject.toml.

``pip install .``, ``pip install -e .`` and ``python -m build`` compile ``csrc/`` into one ctypes
library per ISA level (``logitlab/_native/liblogitlab_{generic,avx2,avx512}.so``; no Python
C-API, so the wheel is tagged ``py3-none-<platform>``) with the flags of
``src/logitlab/_native/_build.py``. Without a C compiler the install goes on without them (a
warning says so; the NumPy/torch paths compute the same results and ``logitlab.show_config()``
reports "not built"); a compiler that fails on the sources fails the install.
For a checkout used without installing: ``python setup.py build_ext --inplace``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "_logitlab_native_build", ROOT / "src" / "logitlab" / "_native" / "_build.py"
)
assert _spec is not None and _spec.loader is not None
nb = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = nb
_spec.loader.exec_module(nb)


class NativeLibrary(Extension):
    """The kernels at one ISA level (built by :func:`_build.build_library`, not by distutils)."""

    def __init__(self, level: str) -> None:
        super().__init__(
            f"logitlab._native.{nb.library_name(level).rsplit('.', 1)[0]}",
            sources=[f"csrc/{name}" for name in nb.SOURCES],
            depends=[f"csrc/{name}" for name in nb.HEADERS] + ["src/logitlab/_native/_build.py"],
        )
        self.level = level


class BuildNative(build_ext):
    def run(self) -> None:
        self._cc = nb.find_compiler()
        if self._cc is None:
            self.warn(
                "no GCC/Clang-compatible C compiler (set CC, or install gcc or clang; Windows "
                "is not supported): logitlab installs without its native kernels and uses the "
                "NumPy/torch paths"
            )
            self.extensions = []
            return
        keep = []
        for ext in self.extensions:
            if ext.level == "generic" or nb.supports_level(self._cc, ext.level):
                keep.append(ext)
            else:
                self.warn(f"{' '.join(self._cc)} cannot build the {ext.level} level: skipped")
        self.extensions = keep
        super().run()

    def get_ext_filename(self, fullname: str) -> str:
        # a plain shared library, without the interpreter's tag (cpython-311-x86_64-linux-gnu)
        return os.path.join(*fullname.split(".")) + Path(nb.library_name("generic")).suffix

    def build_extension(self, ext: Extension) -> None:
        out = Path(self.get_ext_fullpath(ext.name))
        deps = [ROOT / d for d in (*ext.sources, *ext.depends)]
        if (
            not self.force
            and out.exists()
            and out.stat().st_mtime >= max(d.stat().st_mtime for d in deps)
        ):
            return
        assert isinstance(ext, NativeLibrary)
        tmp = Path(self.build_temp)
        tmp.mkdir(parents=True, exist_ok=True)
        nb.build_library(ext.level, out, csrc=ROOT / "csrc", cc=self._cc, tmpdir=tmp)


class WheelAnyPython(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        # ctypes libraries: any CPython 3 on this platform, not one interpreter's ABI
        return ("py3", "none", super().get_tag()[2])


setup(
    ext_modules=[NativeLibrary(level) for level in nb.levels_for_machine()],
    cmdclass={"build_ext": BuildNative, "bdist_wheel": WheelAnyPython},
)
