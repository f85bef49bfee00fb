"""Build the sdist and wheel of this checkout, for the packaging and quickstart tests.

The source is copied to a temporary folder first (git's list of the files
that are tracked or about to be, or the unpacked tree when this is an sdist
with no git), so a test run leaves no ``build/`` or ``*.egg-info`` behind and
stale files in the checkout cannot leak into what is built.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
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


def build(workdir: Path) -> Distributions:
    """``python -m build`` (sdist, then the wheel from the sdist) into ``workdir/dist``.

    Skips when ``build`` is not installed or its isolated environment cannot
    get setuptools; fails on any other build error.
    """
    if importlib.util.find_spec("build") is None:
        pytest.skip("the 'build' package is not installed (it is in the test dependency group)")
    files = source_files()
    src = workdir / "src"
    for name in files:
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    out = workdir / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        reason = failure_reason(output)
        if reason:
            pytest.skip(f"cannot build the sdist and wheel: {reason}")
        pytest.fail(f"python -m build failed:\n{output[-4000:]}")
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Distributions(sdist=sdist, wheel=wheel, source_files=tuple(files))
