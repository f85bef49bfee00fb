"""The sdist and wheel: twine accepts them, the license ships, the sdist is complete.

The sdist is the whole project, runnable (CONTRIBUTING.md, "The sdist"): every
source file but the CI glue and the VCS files, so that its tests run once
the package is installed with its test group. The wheel is the app alone.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser

import pytest

from tests.distributions import SDIST_GENERATED, Distributions

pytestmark = pytest.mark.packaging

if os.environ.get("GATEWAY_REALTIME_TEST_SERVICES") == "1":
    pytest.skip(
        "runs in the SQLite pass: building and checking the distributions uses none of "
        "the suite's database or cache",
        allow_module_level=True,
    )

#: Source files deliberately left out of the sdist: CI and VCS glue.
NOT_IN_SDIST = (".gitignore", ".gitattributes", ".ci/")
#: Files the README links to or that a packager needs, named so a failure is plain.
SDIST_MUST_HAVE = (
    "LICENSE",
    "README.md",
    "CHANGELOG.md",
    "SECURITY.md",
    "CONTRIBUTING.md",
    "MANIFEST.in",
    "pyproject.toml",
    "tox.ini",
    "Makefile",
    "docs/settings.md",
    "docs/performance.md",
    "tests/settings.py",
    "tests/conftest.py",
    "tests/data/test-vectors.jsonl",
    "tests/browser/test_browser.py",
    "example_project/settings.py",
    "bench/stats.py",
)


def sdist_files(distributions: Distributions) -> set[str]:
    with tarfile.open(distributions.sdist) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    top = names[0].split("/", 1)[0]
    relative = {name.split("/", 1)[1] for name in names if name.startswith(top + "/")}
    return {name for name in relative if name not in SDIST_GENERATED and ".egg-info/" not in name}


def test_twine_check_passes(distributions: Distributions) -> None:
    if importlib.util.find_spec("twine") is None:
        pytest.skip("the 'twine' package is not installed (it is in the test dependency group)")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "twine",
            "check",
            "--strict",
            str(distributions.sdist),
            str(distributions.wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_holds_the_license_and_only_the_app(distributions: Distributions) -> None:
    with zipfile.ZipFile(distributions.wheel) as wheel:
        names = wheel.namelist()
        (dist_info,) = {name.split("/", 1)[0] for name in names if ".dist-info/" in name}
        metadata = HeaderParser().parsestr(wheel.read(f"{dist_info}/METADATA").decode())
        license_text = wheel.read(f"{dist_info}/licenses/LICENSE").decode()
    assert license_text.startswith("MIT License")
    assert "Copyright (c) 2026 django-gateway-realtime contributors" in license_text
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert {name.split("/", 1)[0] for name in names} == {"gateway_realtime", dist_info}
    for shipped in (
        "gateway_realtime/py.typed",
        "gateway_realtime/static/gateway_realtime/gateway-realtime.mjs",
        "gateway_realtime/static/gateway_realtime/elements.mjs",
        "gateway_realtime/emulator/__main__.py",
        "gateway_realtime/migrations/__init__.py",
    ):
        assert shipped in names


def test_the_sdist_is_the_whole_project(distributions: Distributions) -> None:
    expected = {name for name in distributions.source_files if not name.startswith(NOT_IN_SDIST)}
    shipped = sdist_files(distributions)
    assert sorted(shipped - expected) == [], "shipped but not a project file"
    assert sorted(expected - shipped) == [], "a project file the sdist leaves out"
    for name in SDIST_MUST_HAVE:
        assert name in shipped, name
    assert any(name.startswith("docs/") for name in shipped)


def test_the_sdist_metadata_names_the_license(distributions: Distributions) -> None:
    with tarfile.open(distributions.sdist) as archive:
        (pkg_info,) = [
            m
            for m in archive.getmembers()
            if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")
        ]
        file = archive.extractfile(pkg_info)
        assert file is not None
        metadata = HeaderParser().parsestr(file.read().decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Description-Content-Type"] == "text/markdown"
