"""The sdist and wheel of this checkout, and a fresh virtualenv with the wheel.

    python -m tests.distributions       # `make dist-deps` (part of `make test`) runs this

Building needs setuptools from the package index (``python -m build``
isolates the build) and the quickstart's virtualenv needs the wheel's
dependencies, so both are prepared here, by make, never by a test: the
packaging and quickstart tests read ``.cache/dist/`` and skip with the
reason (fail under CI) when it is missing or was built from other sources.

The source is copied to a temporary folder first (git's list of the files
that are tracked or about to be, or the unpacked tree when this is an sdist
with no git), so a build leaves no ``build/`` or ``*.egg-info`` behind and
stale files in the checkout cannot leak into what is built. The cache is
keyed by the source files' names and contents.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What ``python -m build`` writes into an sdist besides the source files.
SDIST_GENERATED = ("PKG-INFO", "setup.cfg")
#: Never source: what a working tree (or an unpacked sdist) accumulates.
JUNK_DIRS = {
    ".git",
    ".venv",
    ".cache",
    ".bench",
    ".tox",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "__pycache__",
    "node_modules",
    "build",
    "dist",
}
#: Pip could not fetch something: the machine is offline, not the package broken.
OFFLINE_SIGNS = (
    "Could not find a version that satisfies",
    "No matching distribution found",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
)


@dataclass(frozen=True)
class Distributions:
    sdist: Path
    wheel: Path
    #: The source files the build started from, relative to the root, sorted.
    source_files: tuple[str, ...]


def _is_junk(relative: Path) -> bool:
    return (
        any(part in JUNK_DIRS or part.endswith(".egg-info") for part in relative.parts)
        or relative.suffix in {".pyc", ".pyo"}
        or relative.name.endswith(".sqlite3")
        or str(relative) in SDIST_GENERATED
    )


def source_files(root: Path = ROOT) -> list[str]:
    """The project's files: git's view in a checkout, the tree's in an unpacked sdist."""
    if (root / ".git").exists() and shutil.which("git"):
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout.decode()
        names = [name for name in listed.split("\0") if name]
        # --cached still lists a tracked file deleted in the working tree.
        return sorted(name for name in names if (root / name).is_file())
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and not _is_junk(path.relative_to(root))
    )


def failure_reason(output: str) -> str | None:
    """A skip reason when ``output`` shows pip had no network or cache, else ``None``."""
    for sign in OFFLINE_SIGNS:
        if sign in output:
            return f"pip could not fetch packages ({sign}); offline with a cold cache?"
    return None


class NotBuilt(Exception):
    """The distributions could not be built or installed here; the message says why."""


CACHE = ROOT / ".cache" / "dist"
#: The virtualenv of the quickstart test: the wheel with its emulator extra.
QUICKSTART_VENV = CACHE / "quickstart-venv"


def source_key(files: list[str]) -> str:
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()


def _built(out: Path, files: list[str]) -> Distributions:
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Distributions(sdist=sdist, wheel=wheel, source_files=tuple(files))


def prepare() -> Distributions:
    """Build into ``.cache/dist`` and install the quickstart's virtualenv, unless up to date."""
    files = source_files()
    key = source_key(files)
    stamp = CACHE / "source.key"
    if stamp.exists() and stamp.read_text() == key:
        return _built(CACHE / "out", files)
    if importlib.util.find_spec("build") is None:
        raise NotBuilt("the 'build' package is not installed (it is in the test dependency group)")
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="gateway-realtime-dist-") as scratch:
        built = build(Path(scratch), CACHE / "out", files)
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


def prepared() -> Distributions:
    """What ``prepare`` built for these very sources; skip (fail under CI) otherwise."""
    files = source_files()
    stamp = CACHE / "source.key"
    if stamp.exists() and stamp.read_text() == source_key(files):
        return _built(CACHE / "out", files)
    reason = (
        "the sdist, wheel and quickstart virtualenv are not built for these sources: "
        "run `make dist-deps` (`make test` does)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


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
    return _built(out, files)


def main() -> int:
    try:
        built = prepare()
    except NotBuilt as error:
        print(f"dist-deps: skipped, {error}", file=sys.stderr)
        return 0
    print(f"dist-deps: {built.sdist.name}, {built.wheel.name} and the quickstart virtualenv: ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
