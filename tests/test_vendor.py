"""The vendored AI SDK bundle: pinned, rebuilt to the same bytes, licensed.

``make vendor`` (``vendor/build.py``) bundles ``vendor/ai-sdk/entry.mjs`` from
the committed ``package-lock.json``; these tests rebuild it where node and npm
are present and compare bytes, and check what needs no npm everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("vendor_build", ROOT / "vendor" / "build.py")
assert _spec is not None and _spec.loader is not None
vendor_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vendor_build)

STATIC = ROOT / "gateway_realtime" / "static" / "gateway_realtime"
BUNDLE = STATIC / "vendor" / "ai-sdk.min.mjs"
LICENSES = STATIC / "vendor" / "ai-sdk.LICENSES.txt"
LOCK = json.loads((ROOT / "vendor" / "ai-sdk" / "package-lock.json").read_text())
PACKAGE = json.loads((ROOT / "vendor" / "ai-sdk" / "package.json").read_text())


def locked(name: str) -> str:
    return str(LOCK["packages"][f"node_modules/{name}"]["version"])


def test_the_versions_are_pinned_exactly() -> None:
    for section in ("dependencies", "devDependencies"):
        for name, spec in PACKAGE[section].items():
            assert re.fullmatch(r"\d+\.\d+\.\d+", spec), f"{name} is not pinned: {spec}"
            assert locked(name) == spec


def test_the_bundle_names_its_versions_and_license_file() -> None:
    first = BUNDLE.read_text(encoding="utf-8").splitlines()[0]
    assert f"ai {locked('ai')}" in first
    assert f"@ai-sdk/gateway {locked('@ai-sdk/gateway')}" in first
    assert LICENSES.name in first


def test_every_bundled_package_has_its_license_beside_the_bundle() -> None:
    text = LICENSES.read_text(encoding="utf-8")
    for name in ("ai", "@ai-sdk/gateway", "@ai-sdk/provider", "@ai-sdk/provider-utils", "zod"):
        assert f"\n{name} {locked(name)} (" in text
    assert "Apache License" in text
    assert "MIT" in text


def test_only_the_sdk_module_imports_the_bundle() -> None:
    importers = sorted(
        path.relative_to(STATIC).as_posix()
        for path in STATIC.rglob("*.*js")
        if path.parent.name != "vendor" and "ai-sdk.min.mjs" in path.read_text(encoding="utf-8")
    )
    assert importers == ["sdk.mjs"]


def test_the_bundle_holds_no_path_of_the_machine_that_built_it() -> None:
    text = BUNDLE.read_text(encoding="utf-8")
    assert "node_modules" not in text
    assert "/tmp/" not in text
    assert str(Path.home()) not in text


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_make_vendor_rebuilds_the_committed_bytes(tmp_path: Path) -> None:
    try:
        vendor_build.build(tmp_path / "out", work=tmp_path)
    except vendor_build.BuildError as error:
        if "npm ci failed" in str(error) and (
            "ENOTFOUND" in str(error) or "ETIMEDOUT" in str(error)
        ):
            pytest.skip(f"the npm registry is not reachable: {error}")
        raise
    assert (tmp_path / "out" / BUNDLE.name).read_bytes() == BUNDLE.read_bytes(), (
        "the committed bundle is not what `make vendor` builds from the lock: run `make vendor`"
    )
    assert (tmp_path / "out" / LICENSES.name).read_bytes() == LICENSES.read_bytes()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_bundle_exports_what_sdk_mjs_imports() -> None:
    script = (
        f"import * as m from {json.dumps(BUNDLE.as_uri())};"
        "console.log(JSON.stringify(Object.keys(m).sort()));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        check=True,
    )
    exported = set(json.loads(done.stdout))
    sdk = (STATIC / "sdk.mjs").read_text(encoding="utf-8")
    imported = re.search(r"import \{([^}]*)\} from \"\./vendor/ai-sdk\.min\.mjs\"", sdk)
    assert imported is not None
    names = {name.strip() for name in imported.group(1).split(",") if name.strip()}
    assert names <= exported
