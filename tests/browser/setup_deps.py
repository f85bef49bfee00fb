"""What the browser and end-to-end tests need, and whether it is ready here.

``make browser-deps`` (``python -m tools.test_deps browser``) installs it;
the tests only look, and skip with the reason when something is missing:

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

Each step is cached and never fails the make run: when one is impossible (no
root, no apt, no node/npm, no network) it prints the reason and the tests
that need it skip with the same reason.
"""

from __future__ import annotations

import hashlib
import json
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


def bundle_key() -> str:
    digest = hashlib.sha256(ENTRY.read_bytes())
    digest.update(json.dumps(NPM_PACKAGES, sort_keys=True).encode())
    return digest.hexdigest()


def ai_bundle_problem() -> str | None:
    """Why the AI SDK bundle is not ready, or None."""
    stamp = CACHE / "ai-sdk-realtime.key"
    if AI_BUNDLE.exists() and stamp.exists() and stamp.read_text() == bundle_key():
        return None
    return (
        "the AI SDK bundle is not built: run `make browser-deps` "
        "(needs node, npm and the npm registry)"
    )


OFFICIAL_SOURCE = ROOT / "tests" / "node"
OFFICIAL_CACHE = ROOT / ".cache" / "node-official"


def official_key() -> str:
    return hashlib.sha256((OFFICIAL_SOURCE / "package.json").read_bytes()).hexdigest()


def official_client_problem() -> str | None:
    """Why the official client is not installed at the pinned version, or None."""
    stamp = OFFICIAL_CACHE / "installed.key"
    if stamp.exists() and stamp.read_text() == official_key():
        return None
    return (
        "the official @ai-sdk/gateway client is not installed: run `make browser-deps` "
        "(needs node, npm and the npm registry)"
    )
