"""Build the compiled core.

Environment switches (read at build time):

* ``CONNTABLE_NO_EXTENSIONS=1`` -- install the pure-Python twin only.
* ``CONNTABLE_DEBUG=1`` -- keep Cython's safety checks (bounds, wraparound,
  initialisation), enable line tracing for coverage and write ``cython -a``
  HTML next to the sources.
* ``CONNTABLE_SANITIZE=1`` -- compile with AddressSanitizer and
  UndefinedBehaviorSanitizer (run with ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``).
"""

import os

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


NO_EXTENSIONS = _flag("CONNTABLE_NO_EXTENSIONS")
DEBUG = _flag("CONNTABLE_DEBUG")
SANITIZE = _flag("CONNTABLE_SANITIZE")


def extensions():
    from Cython.Build import cythonize

    directives = {
        "language_level": 3,
        "binding": False,
        "embedsignature": True,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": True,
        "linetrace": DEBUG,
    }
    macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
    compile_args = ["-O3" if not (DEBUG or SANITIZE) else "-O1", "-g"]
    link_args = []
    if SANITIZE:
        sanitizers = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                      "-fno-sanitize-recover=undefined"]
        compile_args += sanitizers
        link_args += sanitizers
    ext = Extension(
        "conntable._ctable",
        ["src/conntable/_ctable.pyx"],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    return cythonize([ext], compiler_directives=directives, annotate=DEBUG)


setup(ext_modules=[] if NO_EXTENSIONS else extensions())
