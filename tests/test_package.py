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


CHOICE = "import conntable; print(conntable.IMPLEMENTATION, conntable.ConnectionTable is conntable.PyConnectionTable)"


@pytest.mark.parametrize("value", ["1", "yes", "true", "false", "00", " "])
def test_env_var_forces_the_twin(value: str) -> None:
    assert run(CHOICE, CONNTABLE_NO_EXTENSIONS=value) == "python True"


@pytest.mark.parametrize("value", ["", "0"])
def test_env_var_off_means_what_it_means_at_build_time(request: pytest.FixtureRequest, value: str) -> None:
    # setup.py reads the variable by the same rule: unset, "" and "0" are off.
    expected = run(CHOICE)
    assert run(CHOICE, CONNTABLE_NO_EXTENSIONS=value) == expected
    if request.config.getoption("c_extensions"):
        assert expected == "cython False"


def test_a_normal_build_is_not_taken_for_a_pure_python_one(
        request: pytest.FixtureRequest, pure_python_install: bool) -> None:
    if request.config.getoption("c_extensions"):
        assert not pure_python_install  # else a broken build would pass on the twin alone
    else:
        assert conntable.IMPLEMENTATION == "python"


def test_stubs_and_marker_ship_with_the_package() -> None:
    here = os.path.dirname(conntable.__file__)
    assert os.path.exists(os.path.join(here, "py.typed"))
    assert os.path.exists(os.path.join(here, "_ctable.pyi"))


@pytest.mark.parametrize("missing, code, extra", [
    ("websockets", "import conntable.websockets", "websockets"),
    ("prometheus_client", "from conntable.aio import PrometheusCollector", "prometheus"),
])
def test_a_missing_optional_dependency_names_its_extra(missing: str, code: str, extra: str) -> None:
    # sys.modules[name] = None makes the import fail as if the package were not installed.
    blocked = f"import sys; sys.modules[{missing!r}] = None; {code}"
    result = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: ") and f"pip install 'conntable[{extra}]'" in last, last
