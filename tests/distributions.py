"""The sdist and wheel of this checkout, and a fresh virtualenv with the wheel.

``make dist-deps`` (part of ``make test``; ``python -m tools.test_deps dist``)
builds them into ``.cache/dist/``.

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
import os
import shutil
import subprocess
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


def built_in(out: Path, files: list[str]) -> Distributions:
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Distributions(sdist=sdist, wheel=wheel, source_files=tuple(files))


def prepared() -> Distributions:
    """What ``prepare`` built for these very sources; skip (fail under CI) otherwise."""
    files = source_files()
    stamp = CACHE / "source.key"
    if stamp.exists() and stamp.read_text() == source_key(files):
        return built_in(CACHE / "out", files)
    reason = (
        "the sdist, wheel and quickstart virtualenv are not built for these sources: "
        "run `make dist-deps` (`make test` does)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
