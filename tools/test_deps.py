"""Install what the tests need, once and cached: `make browser-deps` and `make dist-deps`.

    python -m tools.test_deps browser   # chromium, the AI SDK test bundle, the official client
    python -m tools.test_deps dist      # the sdist, the wheel, the quickstart's virtualenv

The test suite itself never installs anything or reaches a package index:
it reads what these steps left in ``.cache/`` (``tests/browser/setup_deps.py``,
``tests/distributions.py``) and skips with the reason when something is
missing. A step that cannot be done here (no root, no apt, no node/npm, no
network) prints why and does not fail the make run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.browser.setup_deps import (
    AI_BUNDLE,
    CACHE,
    CHROMIUM,
    ENTRY,
    NPM_PACKAGES,
    OFFICIAL_CACHE,
    OFFICIAL_SOURCE,
    ai_bundle_problem,
    bundle_key,
    chromium_problem,
    official_client_problem,
    official_key,
)
from tests.distributions import (
    CACHE as DIST_CACHE,
)
from tests.distributions import (
    QUICKSTART_VENV,
    ROOT,
    Distributions,
    NotBuilt,
    built_in,
    source_files,
    source_key,
)

#: Pip could not fetch something: the machine is offline, not the package broken.
OFFLINE_SIGNS = (
    "Could not find a version that satisfies",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


def failure_reason(output: str) -> str | None:
    """A skip reason when ``output`` shows pip had no network or cache, else ``None``."""
    for sign in OFFLINE_SIGNS:
        if sign in output:
            return f"pip could not fetch packages ({sign}); offline with a cold cache?"
    return None


def _npm_install(npm: str, folder: Path, what: str) -> str | None:
    """``npm install`` in ``folder``; why it failed, or None."""
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
        cwd=folder,
        check=False,
        capture_output=True,
        text=True,
    )
    if install.returncode != 0:
        return f"npm install of {what} failed (no network?): " + install.stderr.strip()[-300:]
    return None


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
    problem = _npm_install(npm, CACHE, "ai@7.0.x")
    if problem:
        return problem
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
    (CACHE / "ai-sdk-realtime.key").write_text(bundle_key())
    return ai_bundle_problem()


def ensure_official_client() -> str | None:
    """npm install tests/node/package.json's pinned @ai-sdk/gateway into the cache."""
    if official_client_problem() is None:
        return None
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return "node and npm are needed to install the official @ai-sdk/gateway client"
    OFFICIAL_CACHE.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(OFFICIAL_SOURCE / "package.json", OFFICIAL_CACHE / "package.json")
    problem = _npm_install(npm, OFFICIAL_CACHE, "@ai-sdk/gateway")
    if problem:
        return problem
    (OFFICIAL_CACHE / "installed.key").write_text(official_key())
    return official_client_problem()


def prepare() -> Distributions:
    """Build into ``.cache/dist`` and install the quickstart's virtualenv, unless up to date."""
    files = source_files()
    key = source_key(files)
    stamp = DIST_CACHE / "source.key"
    if stamp.exists() and stamp.read_text() == key:
        return built_in(DIST_CACHE / "out", files)
    if importlib.util.find_spec("build") is None:
        raise NotBuilt("the 'build' package is not installed (it is in the test dependency group)")
    shutil.rmtree(DIST_CACHE, ignore_errors=True)
    DIST_CACHE.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="gateway-realtime-dist-") as scratch:
        built = build(Path(scratch), DIST_CACHE / "out", files)
    subprocess.run([sys.executable, "-m", "venv", str(QUICKSTART_VENV)], check=True, timeout=120)
    result = subprocess.run(
        [
            str(QUICKSTART_VENV / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{built.wheel}[emulator]",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        raise NotBuilt(
            failure_reason(output) or f"pip install of the wheel failed:\n{output[-4000:]}"
        )
    stamp.write_text(key)
    return built


def build(workdir: Path, out: Path, files: list[str]) -> Distributions:
    """``python -m build`` (sdist, then the wheel from the sdist) of ``files`` into ``out``."""
    src = workdir / "src"
    for name in files:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise NotBuilt(failure_reason(output) or f"python -m build failed:\n{output[-4000:]}")
    return built_in(out, files)


def main(argv: list[str]) -> int:
    what = argv[0] if argv else ""
    if what == "browser":
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
    if what == "dist":
        try:
            built = prepare()
        except NotBuilt as error:
            print(f"dist-deps: skipped, {error}", file=sys.stderr)
            return 0
        names = f"{built.sdist.name}, {built.wheel.name}"
        print(f"dist-deps: {names} and the quickstart virtualenv: ready")
        return 0
    print("usage: python -m tools.test_deps browser|dist", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
