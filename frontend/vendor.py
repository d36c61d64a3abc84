"""Copy the dashboard's pinned third-party files from node_modules into the package (`make vendor`).

The copies are committed with `LOCK.json` (package, version, sha256 of each file), so serving the
dashboard needs neither node nor the network. `--check` verifies the committed copies against the
lock without node_modules (CI and tests use it): a hand-edited or half-copied vendor file fails.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE.parent / "aichat_gateway" / "dashboard" / "static" / "vendor"
LOCK = VENDOR / "LOCK.json"

# (npm package, file inside it, name under static/vendor/)
FILES: tuple[tuple[str, str, str], ...] = (
    ("htmx.org", "dist/htmx.min.js", "htmx.min.js"),
    ("@fontsource/ibm-plex-mono", "files/ibm-plex-mono-latin-400-normal.woff2", "ibm-plex-mono-400.woff2"),
    ("@fontsource/ibm-plex-mono", "files/ibm-plex-mono-latin-700-normal.woff2", "ibm-plex-mono-700.woff2"),
    ("@fontsource/ibm-plex-mono", "LICENSE", "ibm-plex-mono-LICENSE.txt"),
    ("uplot", "dist/uPlot.iife.min.js", "uPlot.iife.min.js"),
    ("uplot", "dist/uPlot.min.css", "uPlot.min.css"),
    ("uplot", "LICENSE", "uPlot-LICENSE.txt"),
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy() -> dict[str, dict[str, str]]:
    lock: dict[str, dict[str, str]] = {}
    VENDOR.mkdir(parents=True, exist_ok=True)
    for package, inner, name in FILES:
        root = HERE / "node_modules" / package
        version = json.loads((root / "package.json").read_text())["version"]
        target = VENDOR / name
        shutil.copyfile(root / inner, target)
        lock[name] = {"package": package, "version": version, "source": inner, "sha256": sha256(target)}
    LOCK.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return lock


def check() -> list[str]:
    """What differs between the committed vendor files and the lock (empty: all good)."""
    lock = json.loads(LOCK.read_text())
    problems = [f"{name}: in FILES but not in LOCK.json" for _, _, name in FILES if name not in lock]
    for name, entry in sorted(lock.items()):
        path = VENDOR / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from LOCK.json")
    return problems


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        problems = check()
        for problem in problems:
            print(f"vendor: {problem}", file=sys.stderr)
        return 1 if problems else 0
    for name, entry in sorted(copy().items()):
        print(f"vendor: {name} <- {entry['package']}@{entry['version']} {entry['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
