"""How the package picks its implementation, and what it exports."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import conntable


def run(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "CONNTABLE_NO_EXTENSIONS"}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_exports() -> None:
    assert set(conntable.__all__) >= {
        "ConnectionTable", "PyConnectionTable", "Expired", "TableFull", "IMPLEMENTATION",
    }
    assert conntable.PyConnectionTable.__module__ == "conntable._pytable"
    assert conntable.Expired._fields == ("key", "value", "reason")


def test_compiled_table_is_the_default(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("c_extensions"):
        pytest.skip("--no-c-extensions: the extension need not be built")
    out = run("import conntable; print(conntable.IMPLEMENTATION, conntable.ConnectionTable.__module__)")
    assert out == "cython conntable._ctable"


def test_env_var_forces_the_twin() -> None:
    code = "import conntable; print(conntable.IMPLEMENTATION, conntable.ConnectionTable is conntable.PyConnectionTable)"
    assert run(code, CONNTABLE_NO_EXTENSIONS="1") == "python True"


def test_stubs_and_marker_ship_with_the_package() -> None:
    here = os.path.dirname(conntable.__file__)
    assert os.path.exists(os.path.join(here, "py.typed"))
    assert os.path.exists(os.path.join(here, "_ctable.pyi"))
