"""Print line coverage of aichat_gateway/ per package from coverage.py's JSON report; fail under the bar.

    python tools/coverage_summary.py .coverage-data/report.json

One line per package (the first folder below aichat_gateway/, sub-packages included; modules
directly in aichat_gateway/ are "(top-level modules)"), then the total. Exits 1 when the total is
under `[tool.coverage.report] fail_under` of pyproject.toml (or `--fail-under`), 2 for a report it
cannot read. Standard library only: it runs after the tests, from `make test`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

PACKAGE = "aichat_gateway"
TOP_LEVEL = "(top-level modules)"
PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


@dataclass
class Tally:
    statements: int = 0
    covered: int = 0

    @property
    def missed(self) -> int:
        return self.statements - self.covered

    @property
    def percent(self) -> float:
        # An empty package (only __init__.py files without statements) is fully covered, as coverage.py says.
        return 100.0 * self.covered / self.statements if self.statements else 100.0


def package_of(path: str) -> str:
    """`aichat_gateway/proxy/chat.py` -> `proxy`; `aichat_gateway/x.py` -> TOP_LEVEL (any path prefix)."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if PACKAGE not in parts:
        raise ValueError(f"{path} is not in {PACKAGE}/")
    below = parts[len(parts) - 1 - parts[::-1].index(PACKAGE) + 1 :]
    return below[0] if len(below) > 1 else TOP_LEVEL


def tally(report: dict[str, Any]) -> tuple[dict[str, Tally], Tally]:
    """Statements and covered lines per package, and in all, from a coverage.py JSON report."""
    packages: dict[str, Tally] = {}
    total = Tally()
    for path, data in report["files"].items():
        summary = data["summary"]
        entry = packages.setdefault(package_of(path), Tally())
        for t in (entry, total):
            t.statements += int(summary["num_statements"])
            t.covered += int(summary["covered_lines"])
    return packages, total


def render(packages: dict[str, Tally], total: Tally) -> list[str]:
    width = max([len(name) for name in packages] + [len("package")])
    row = f"  {{:<{width}}}  {{:>10}}  {{:>8}}  {{:>7}}"
    lines = [row.format("package", "statements", "missed", "cover")]
    # A package of empty modules only (a placeholder) has nothing to measure.
    shown = [name for name, t in packages.items() if t.statements]
    names = sorted(name for name in shown if name != TOP_LEVEL) + ([TOP_LEVEL] if TOP_LEVEL in shown else [])
    for name in [*names, "TOTAL"]:
        t = total if name == "TOTAL" else packages[name]
        lines.append(row.format(name, f"{t.statements:,}", f"{t.missed:,}", f"{t.percent:.1f} %"))
    return lines


def configured_fail_under() -> float:
    with PYPROJECT.open("rb") as f:
        config = tomllib.load(f)
    return float(config["tool"]["coverage"]["report"]["fail_under"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("report", type=Path, help="coverage.py JSON report (`coverage json -o ...`)")
    parser.add_argument("--fail-under", type=float, help="percent; default: pyproject's [tool.coverage.report]")
    args = parser.parse_args(argv)
    try:
        packages, total = tally(json.loads(args.report.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        print(f"coverage: cannot read {args.report}: {exc}", file=sys.stderr)
        return 2
    bar = args.fail_under if args.fail_under is not None else configured_fail_under()
    print(f"Line coverage of {PACKAGE}/ (the tests and the processes they started):")
    print("\n".join(render(packages, total)))
    if total.percent < bar:
        print(f"coverage: FAILED, {total.percent:.2f} % of lines is under the {bar:g} % bar")
        return 1
    print(f"coverage: {total.percent:.2f} % of lines, the bar is {bar:g} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
