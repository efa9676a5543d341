"""Build the compiled core.

Environment switches, read at build time. Each is off when unset, empty or
``0`` and on for any other value (``import conntable`` reads
``CONNTABLE_NO_EXTENSIONS`` by the same rule at run time):

* ``CONNTABLE_NO_EXTENSIONS=1`` -- install the pure-Python twin only (the
  wheel is then ``py3-none-any``; the test suite notices and tests the twin).
* ``CONNTABLE_DEBUG=1`` -- keep Cython's safety checks (bounds, wraparound,
  initialisation) and the C debug information, enable line tracing for
  coverage and write ``cython -a`` HTML next to the sources.
* ``CONNTABLE_SANITIZE=1`` -- compile with AddressSanitizer and
  UndefinedBehaviorSanitizer (run with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``).
* ``CONNTABLE_SYMBOLS=1`` -- the release code, with its debug information
  kept (for valgrind, perf or gdb; ``tools/valgrind.sh`` uses it).

A release build (none of the last three) carries no debug information: the
objects are compiled with ``-g0`` after the interpreter's own flags (which
often say ``-g``) and the module is linked stripped. MSVC keeps debug
information out of the module anyway (in a ``.pdb``), so there the flags
are the compiler's defaults.

The ``.pyx`` is cythonized when the extension is built (Cython is a build
requirement in ``pyproject.toml``), so the sdist ships the Cython sources
and never generated C that could be stale or from another Cython.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("CONNTABLE_NO_EXTENSIONS")
DEBUG = _flag("CONNTABLE_DEBUG")
SANITIZE = _flag("CONNTABLE_SANITIZE")
SYMBOLS = _flag("CONNTABLE_SYMBOLS")

DIRECTIVES = {
    "language_level": 3,
    "binding": False,
    "embedsignature": True,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "linetrace": DEBUG,
}


class cythonize_build_ext(build_ext):
    """Cythonize when (and only when) the extension is built, with flags for the compiler in use."""

    def run(self) -> None:
        # Here rather than in finalize_options, which sdist calls too: an sdist lists the .pyx.
        from Cython.Build import cythonize

        # A module built with other switches is not up to date, whatever its timestamp says
        # (an in-tree build/ outlives the build that wrote it: e.g. a sanitized module).
        stamp = os.path.join(self.build_temp, "conntable-switches")
        switches = f"debug={DEBUG} sanitize={SANITIZE} symbols={SYMBOLS}\n"
        if not os.path.exists(stamp):
            self.force = True
        else:
            with open(stamp) as previous:
                self.force = self.force or previous.read() != switches
        generated = cythonize(self.extensions, compiler_directives=DIRECTIVES, annotate=DEBUG,
                              force=self.force)
        for ext, cythonized in zip(self.extensions, generated):
            ext.sources = cythonized.sources  # keep the objects setuptools has prepared
        super().run()
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as out:
            out.write(switches)

    def build_extension(self, ext: Extension) -> None:
        if self.compiler.compiler_type != "msvc":  # MSVC keeps debug info in a .pdb, not the module
            ext.extra_compile_args += gcc_like_compile_args()
            ext.extra_link_args += gcc_like_link_args()
        super().build_extension(ext)


def gcc_like_compile_args() -> list:
    if SANITIZE:
        return ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=undefined"]
    if DEBUG:
        return ["-O1", "-g"]
    return ["-O3", "-g" if SYMBOLS else "-g0"]  # after the interpreter's CFLAGS, so -g0 wins over their -g


def gcc_like_link_args() -> list:
    if SANITIZE:
        return ["-fsanitize=address,undefined"]
    if DEBUG or SYMBOLS:
        return []
    # Strip what -g0 cannot remove (the static symbol table); the module's exported
    # PyInit_ symbol lives in the dynamic table and stays.
    return ["-Wl,-S", "-Wl,-x"] if sys.platform == "darwin" else ["-s"]


def extensions() -> list:
    macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    return [Extension("conntable._ctable", ["src/conntable/_ctable.pyx"], define_macros=macros)]


setup(
    ext_modules=[] if NO_EXTENSIONS else extensions(),
    cmdclass={} if NO_EXTENSIONS else {"build_ext": cythonize_build_ext},
)
