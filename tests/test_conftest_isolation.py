"""The suite's isolation holds across fixture scopes: what a module's or a class's fixture leaves behind in its
teardown does not reach the next module or class (tests/conftest.py `process_state_restored_per_module`).

A shuffled `make test` under load failed on exactly that (seed 540776): a module fixture's teardown, which runs
after its last test's own restore, wrote MLflow's default URI into os.environ and a later module's CLI test
refused to start. Here a small suite of its own, run by pytest in a subprocess, leaks from a module fixture and
from a class fixture and checks in the next module and class; with only the per-test restore, the same suite
fails (so this test can fail).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).parent / "conftest.py"
LEAK = "REFLEX_TEST_LEAKED_BY_A_FIXTURE_TEARDOWN"

INNER_CONFTEST = """
import importlib.util
spec = importlib.util.spec_from_file_location("reflex_conftest", {conftest!r})
reflex_conftest = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reflex_conftest)
{imports}
"""

LEAKS = f"""
import os
import pytest

@pytest.fixture(scope="module")
def leaky_module():
    yield
    os.environ["{LEAK}_MODULE"] = "1"

def test_uses_a_module_fixture(leaky_module):
    pass

class TestLeaks:
    @pytest.fixture(scope="class")
    def leaky_class(self):
        yield
        os.environ["{LEAK}_CLASS"] = "1"

    def test_uses_a_class_fixture(self, leaky_class):
        pass

class TestNextClass:
    def test_sees_no_class_leak(self):
        assert "{LEAK}_CLASS" not in os.environ
"""

CHECKS = f"""
import os

def test_sees_no_module_leak():
    assert "{LEAK}_MODULE" not in os.environ
"""


def _run_inner(tmp_path: Path, fixtures: list[str]) -> subprocess.CompletedProcess[str]:
    imports = "\n".join(f"{name} = reflex_conftest.{name}" for name in fixtures)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(INNER_CONFTEST.format(conftest=str(CONFTEST), imports=imports))
    (tmp_path / "test_a_leaks.py").write_text(LEAKS)
    (tmp_path / "test_b_checks.py").write_text(CHECKS)
    env = {key: value for key, value in os.environ.items() if not key.startswith(LEAK)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "test_a_leaks.py", "test_b_checks.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("fixtures", "failed"), [
    (["process_state_restored", "process_state_restored_per_class", "process_state_restored_per_module"], 0),
    (["process_state_restored"], 2),  # the per-test restore alone: both leaks reach the next class and module
])
def test_a_fixture_teardown_leaks_into_no_later_class_or_module(tmp_path: Path, fixtures: list[str],
                                                                failed: int) -> None:
    run = _run_inner(tmp_path, fixtures)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    if failed:
        assert run.returncode == 1 and f"{failed} failed, 2 passed" in summary, run.stdout + run.stderr
    else:
        assert run.returncode == 0 and "4 passed" in summary, run.stdout + run.stderr
