"""The coverage gate of `make test`: tools/coverage_summary.py and the saving plugin tools/coverage_flush.py.

The plugin is checked on a real child process measured by coverage.py, with a configuration of its
own in a tmp dir: the child must write its data while it runs, since the tests end most of their
gateways with SIGKILL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from coverage import CoverageData
from coverage.exceptions import DataError

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str) -> ModuleType:
    """tools/ is not a package (the Makefile puts it on PYTHONPATH for `make test` only): load by path."""
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


summary = load_tool("coverage_summary")


def report(files: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """A coverage.py JSON report with {path: (statements, covered)}."""
    return {
        "files": {
            path: {"summary": {"num_statements": statements, "covered_lines": covered}}
            for path, (statements, covered) in files.items()
        },
        "totals": {},
    }


def write_report(tmp_path: Path, files: dict[str, tuple[int, int]]) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report(files)))
    return path


def test_files_are_grouped_by_the_first_folder_below_the_package_and_modules_beside_it_are_top_level() -> None:
    packages, total = summary.tally(
        report(
            {
                "aichat_gateway/proxy/chat.py": (100, 90),
                "aichat_gateway/proxy/sub/deep.py": (10, 0),
                "/abs/checkout/aichat_gateway/billing/ledger.py": (50, 50),
                "aichat_gateway/fakeupstream.py": (40, 20),
            }
        )
    )
    assert {name: (t.statements, t.covered) for name, t in packages.items()} == {
        "proxy": (110, 90),
        "billing": (50, 50),
        summary.TOP_LEVEL: (40, 20),
    }
    assert (total.statements, total.covered) == (200, 160)


def test_a_file_outside_the_package_is_refused() -> None:
    with pytest.raises(ValueError, match="not in aichat_gateway"):
        summary.package_of("tests/unit/test_money.py")


def test_the_summary_passes_at_the_bar_and_prints_every_package_with_statements(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_report(
        tmp_path,
        {"aichat_gateway/accounts/users.py": (100, 80), "aichat_gateway/dashboard/__init__.py": (0, 0)},
    )
    assert summary.main([str(path), "--fail-under", "80"]) == 0
    out = capsys.readouterr().out
    assert "accounts" in out and "80.0 %" in out
    assert "dashboard" not in out, "a package without statements has nothing to show"


def test_the_summary_fails_under_the_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_report(tmp_path, {"aichat_gateway/accounts/users.py": (1000, 799)})
    assert summary.main([str(path), "--fail-under", "80"]) == 1
    assert "FAILED, 79.90 %" in capsys.readouterr().out


def test_the_bar_defaults_to_pyprojects_fail_under() -> None:
    assert summary.configured_fail_under() == 80


def test_an_unreadable_report_is_an_error_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{not json")
    assert summary.main([str(tmp_path / "report.json"), "--fail-under", "0"]) == 2


VICTIM = """
import sys, time

def ran():
    return 1

def never_ran():
    return 2

ran()
print("ready", flush=True)
time.sleep(60)
"""


def lines_saved(data_dir: Path, source: Path, while_written: bool = False) -> set[int]:
    """The lines of `source` in the data files of `data_dir`."""
    saved: set[int] = set()
    for path in data_dir.glob("coverage.*"):
        data = CoverageData(str(path))
        try:
            data.read()
        except DataError:
            if while_written:
                continue  # caught in the middle of a write (coverage.py's SQLite runs without a journal)
            raise
        saved |= set(data.lines(str(source)) or ())
    return saved


@pytest.mark.timeout(60)
def test_a_measured_child_writes_its_coverage_while_running_so_a_sigkill_keeps_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.py"
    victim.write_text(VICTIM)
    data_dir = tmp_path / "data"
    rcfile = tmp_path / "coverage.toml"
    rcfile.write_text(
        f"""
[tool.coverage.run]
source = ["{tmp_path}"]
parallel = true
data_file = "{data_dir}/coverage"
plugins = ["coverage_flush"]

[tool.coverage.coverage_flush]
interval = 0.1
"""
    )
    # coverage.py's .pth hook starts measuring in the child from COVERAGE_PROCESS_START; the test runner's
    # own COVERAGE_PROCESS_CONFIG (under `make test`) would take precedence, so it goes.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    env["COVERAGE_PROCESS_START"] = str(rcfile)
    env["PYTHONPATH"] = str(TOOLS)
    child = subprocess.Popen([sys.executable, str(victim)], stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"

        deadline = time.monotonic() + 30
        while 5 not in lines_saved(data_dir, victim, while_written=True):  # `return 1` in ran()
            assert child.poll() is None, "the child exited: its data must come from the periodic save"
            assert time.monotonic() < deadline, "the running child never wrote its coverage"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    saved = lines_saved(data_dir, victim)
    assert {5, 10} <= saved, "the lines run before the kill are kept"
    assert 8 not in saved, "never_ran() did not run"
