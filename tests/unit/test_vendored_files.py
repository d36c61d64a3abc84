"""The dashboard's vendored third-party files are exactly the ones `make vendor` locked."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _vendor_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("vendor", ROOT / "frontend" / "vendor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_vendored_file_matches_its_sha256_in_the_lock() -> None:
    assert _vendor_module().check() == []


def test_the_lock_pins_the_versions_package_json_asks_for() -> None:
    wanted = json.loads((ROOT / "frontend" / "package.json").read_text())["dependencies"]
    lock = json.loads((ROOT / "aichat_gateway" / "dashboard" / "static" / "vendor" / "LOCK.json").read_text())
    for entry in lock.values():
        assert wanted[entry["package"]] == entry["version"]
