"""The vendored AI SDK bundle: pinned, rebuilt to the same bytes, licensed.

``make vendor`` (``vendor/build.py``) bundles ``vendor/ai-sdk/entry.mjs`` from
the committed ``package-lock.json``; ``make vendor-check`` (CI) rebuilds it
from the registry and compares bytes. These tests need no npm and no network.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

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


# Drift: the bundle, the recorded vectors and the app's own wire module name
# one upstream release, and CHANGELOG.md says which.

VECTORS = ("test-vectors.jsonl", "test-vectors-live.jsonl")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def recorded_gateway_versions() -> set[str]:
    """The ``@ai-sdk/gateway`` versions named by the vectors' ``sdk`` fields."""
    versions = set()
    for name in VECTORS:
        for line in (ROOT / "tests" / "data" / name).read_text(encoding="utf-8").splitlines():
            sdk = json.loads(line).get("sdk") if line.strip() else None
            if sdk:
                package, _, version = sdk.rpartition(" ")
                assert package == "@ai-sdk/gateway", f"{name}: unexpected sdk field {sdk!r}"
                versions.add(version)
    return versions


def test_the_vendored_bundle_is_the_release_the_vectors_were_recorded_from() -> None:
    recorded = recorded_gateway_versions()
    assert recorded, "no test vector names the SDK it was recorded from"
    newest = max(recorded, key=_version)
    bundled = locked("@ai-sdk/gateway")
    assert bundled == newest, (
        f"the vendored bundle is @ai-sdk/gateway {bundled}, but the newest test vectors were "
        f"recorded from {newest}: update vendor/ai-sdk/package.json and run `make vendor` "
        "(or record the vectors again from the bundled release), then check the wire contract"
    )


def test_the_bundle_and_the_wire_module_know_the_same_live_models() -> None:
    from gateway_realtime.protocol import LIVE_MODEL_IDS

    text = BUNDLE.read_text(encoding="utf-8")
    lists = [
        set(json.loads(f"[{found}]"))
        for found in re.findall(
            r"\[((?:\"[^\"]+\",)*\"openai/gpt-live-1\"(?:,\"[^\"]+\")*)\]", text
        )
    ]
    assert lists, "the bundle no longer lists openai/gpt-live-1 as a Live model"
    assert lists == [set(LIVE_MODEL_IDS)], (
        f"the bundled AI SDK's Live model ids {lists} differ from "
        f"gateway_realtime.protocol.LIVE_MODEL_IDS {sorted(LIVE_MODEL_IDS)}"
    )


def test_the_changelog_names_the_upstream_releases_the_app_is_verified_against() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    line = f"Verified against `ai` {locked('ai')} and `@ai-sdk/gateway` {locked('@ai-sdk/gateway')}"
    assert line in changelog, f"CHANGELOG.md should say: {line}"


@pytest.mark.parametrize("pins", ["tests/node/package.json", "bench/anchor/package.json"])
def test_the_official_client_the_tests_and_the_bench_use_is_the_bundled_release(pins: str) -> None:
    pinned = json.loads((ROOT / pins).read_text())
    official = pinned["dependencies"]["@ai-sdk/gateway"]
    assert official == locked("@ai-sdk/gateway"), (
        f"{pins} pins @ai-sdk/gateway {official}, the bundle has "
        f"{locked('@ai-sdk/gateway')}: pin the same release everywhere"
    )
