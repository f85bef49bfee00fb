"""Install what the browser and end-to-end tests need, or say why it cannot be done here.

    python -m tests.browser.setup_deps          # `make browser-deps` runs this

1. Debian's chromium at /usr/bin/chromium: installed with apt-get when it is
   missing and this runs as root with apt available. Playwright's own browser
   download is never used.
2. The AI SDK's browser realtime session: the ``ai`` npm package (7.0.x) from
   the npm registry, bundled with esbuild into one browser script under
   ``.cache/browser/`` (git-ignored). Rebuilt only when the entry file or the
   pinned versions change.

3. The official ``@ai-sdk/gateway`` client, at the version
   ``tests/node/package.json`` pins, installed into ``.cache/node-official/``
   for tests/test_example_e2e.py to compare its mints with the app's.

Every step is cached and never fails the run: when a step is impossible (no
root, no apt, no node/npm, no network) it prints the reason and the tests that
need it skip with the same reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
ENTRY = Path(__file__).with_name("ai_sdk_entry.mjs")
AI_BUNDLE = CACHE / "ai-sdk-realtime.js"
NPM_PACKAGES = {"ai": "~7.0.0", "esbuild": "~0.28.0"}


def chromium_problem() -> str | None:
    """Why chromium is unusable here, or None."""
    if CHROMIUM.exists():
        return None
    return (
        f"{CHROMIUM} is missing: run `make browser-deps` as root on Debian/Ubuntu "
        "(it runs `apt-get install chromium`)"
    )


def ensure_chromium() -> str | None:
    """Install chromium when missing and possible; return the remaining problem."""
    if chromium_problem() is None:
        return None
    apt = shutil.which("apt-get")
    if apt is None:
        return f"{CHROMIUM} is missing and apt-get is not available"
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, check=False).returncode != 0:
        # The package lists may be missing or stale on a fresh machine.
        subprocess.run([apt, "update", "-qq"], env=env, check=False)
        subprocess.run(install, env=env, check=False)
    return chromium_problem()


def _bundle_key() -> str:
    digest = hashlib.sha256(ENTRY.read_bytes())
    digest.update(json.dumps(NPM_PACKAGES, sort_keys=True).encode())
    return digest.hexdigest()


def ai_bundle_problem() -> str | None:
    """Why the AI SDK bundle is not ready, or None."""
    stamp = CACHE / "ai-sdk-realtime.key"
    if AI_BUNDLE.exists() and stamp.exists() and stamp.read_text() == _bundle_key():
        return None
    return (
        "the AI SDK bundle is not built: run `make browser-deps` "
        "(needs node, npm and the npm registry)"
    )


def ensure_ai_bundle() -> str | None:
    """Install ``ai`` 7.0.x and esbuild into the cache and bundle the entry file."""
    if ai_bundle_problem() is None:
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node and npm are needed to bundle the AI SDK (`ai` 7.0.x) for the browser tests"
    CACHE.mkdir(parents=True, exist_ok=True)
    package = {
        "private": True,
        "name": "gateway-realtime-browser-tests",
        "dependencies": NPM_PACKAGES,
    }
    (CACHE / "package.json").write_text(json.dumps(package, indent=2) + "\n")
    install = subprocess.run(
        # Short network time-outs: offline, say so quickly rather than in minutes.
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--fetch-timeout=20000",
            "--fetch-retries=1",
        ],
        cwd=CACHE,
        check=False,
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        return "npm install of ai@7.0.x failed (no network?): " + install.stderr.strip()[-300:]
    esbuild = CACHE / "node_modules" / ".bin" / "esbuild"
    # Bundled from inside the cache so that imports resolve to its node_modules.
    entry = CACHE / ENTRY.name
    shutil.copyfile(ENTRY, entry)
    build = subprocess.run(
        [
            str(esbuild),
            str(entry),
            "--bundle",
            "--format=iife",
            "--platform=browser",
            "--target=es2022",
            "--log-level=error",
            f"--outfile={AI_BUNDLE}",
        ],
        cwd=CACHE,
        check=False,
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        return "esbuild could not bundle the AI SDK: " + build.stderr.strip()[-300:]
    (CACHE / "ai-sdk-realtime.key").write_text(_bundle_key())
    return ai_bundle_problem()


OFFICIAL_SOURCE = ROOT / "tests" / "node"
OFFICIAL_CACHE = ROOT / ".cache" / "node-official"


def _official_key() -> str:
    return hashlib.sha256((OFFICIAL_SOURCE / "package.json").read_bytes()).hexdigest()


def official_client_problem() -> str | None:
    """Why the official client is not installed at the pinned version, or None."""
    stamp = OFFICIAL_CACHE / "installed.key"
    if stamp.exists() and stamp.read_text() == _official_key():
        return None
    return (
        "the official @ai-sdk/gateway client is not installed: run `make browser-deps` "
        "(needs node, npm and the npm registry)"
    )


def ensure_official_client() -> str | None:
    """npm install tests/node/package.json's pinned @ai-sdk/gateway into the cache."""
    if official_client_problem() is None:
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node and npm are needed to install the official @ai-sdk/gateway client"
    OFFICIAL_CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(OFFICIAL_SOURCE / "package.json", OFFICIAL_CACHE / "package.json")
    install = subprocess.run(
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--fetch-timeout=20000",
            "--fetch-retries=1",
        ],
        cwd=OFFICIAL_CACHE,
        check=False,
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        return "npm install of @ai-sdk/gateway failed (no network?): " + install.stderr[-300:]
    (OFFICIAL_CACHE / "installed.key").write_text(_official_key())
    return official_client_problem()


def main() -> int:
    steps = (
        ("chromium", ensure_chromium),
        ("AI SDK bundle", ensure_ai_bundle),
        ("official client", ensure_official_client),
    )
    for name, step in steps:
        problem = step()
        if problem:
            print(f"browser-deps: {name}: skipped, {problem}", file=sys.stderr)
        else:
            print(f"browser-deps: {name}: ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
