"""Build the vendored AI SDK bundle: ``make vendor`` runs ``python vendor/build.py``.

    python vendor/build.py                 # rebuild the committed files
    python vendor/build.py --out DIR       # build into DIR instead
    python vendor/build.py --check         # build aside; fail unless it is the committed bytes

From ``vendor/ai-sdk/`` (``package.json`` pins exact versions,
``package-lock.json`` is committed): ``npm ci`` installs exactly the locked
packages, esbuild bundles ``entry.mjs`` into one minified ES module, and the
license texts of every package that ended up in it are collected beside it:

- ``gateway_realtime/static/gateway_realtime/vendor/ai-sdk.min.mjs``
- ``gateway_realtime/static/gateway_realtime/vendor/ai-sdk.LICENSES.txt``

The same lock, entry and esbuild give the same bytes, which ``--check``
(``make vendor-check``, run by CI) verifies. Needs node and npm, and the npm
registry: that is why the check is a make target and not a test, since the
test suite never installs anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "vendor" / "ai-sdk"
TARGET = ROOT / "gateway_realtime" / "static" / "gateway_realtime" / "vendor"
BUNDLE = "ai-sdk.min.mjs"
LICENSES = "ai-sdk.LICENSES.txt"
INPUTS = ("package.json", "package-lock.json", "entry.mjs")
LICENSE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license", "license.md")


class BuildError(Exception):
    """The bundle could not be built here (no npm, no registry, esbuild failed)."""


def _run(command: list[str], cwd: Path) -> None:
    # Our own fixed commands: npm and the locked esbuild.
    done = subprocess.run(command, cwd=cwd, check=False, capture_output=True, text=True)  # noqa: S603
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-800:]
        raise BuildError(f"{' '.join(command[:2])} failed in {cwd.name}: {output}")


def _package_of(path: str) -> str:
    parts = path.split("node_modules/")[-1].split("/")
    return "/".join(parts[:2]) if parts[0].startswith("@") else parts[0]


def _own_license(folder: Path) -> str | None:
    for name in LICENSE_NAMES:
        candidate = folder / name
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8").strip()
    return None


def _repository(info: dict[str, object]) -> object:
    repository = info.get("repository")
    return repository.get("url") if isinstance(repository, dict) else repository


def _license_text(
    folder: Path, name: str, info: dict[str, object], infos: dict[str, dict[str, object]]
) -> str:
    """The package's own license file; else that of a package from the same repository."""
    text = _own_license(folder)
    if text is not None:
        return text
    # @ai-sdk/provider-utils, say, declares Apache-2.0 but ships no file; the
    # vercel/ai repository it is published from has one, which ``ai`` ships.
    for other, other_info in sorted(infos.items()):
        if (
            other != name
            and _repository(other_info) == _repository(info)
            and other_info.get("license") == info.get("license")
        ):
            text = _own_license(folder.parents[len(name.split("/")) - 1] / other)
            if text is not None:
                return (
                    f"(The package ships no license file. It is published from "
                    f"{_repository(info)} under {info.get('license')}; the license "
                    f"file of that repository, as {other} ships it:)\n\n{text}"
                )
    raise BuildError(f"{name} ships no license file; it cannot be vendored")


def build(out: Path, work: Path | None = None) -> dict[str, int]:
    """Build the bundle and its license notice into ``out``; return their sizes."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise BuildError("node and npm are needed to build the vendored AI SDK bundle")
    with tempfile.TemporaryDirectory(prefix="gateway-realtime-vendor-") as scratch:
        # npm ci in a copy, so a build never touches the checkout but for its output.
        build_dir = work or Path(scratch)
        for name in INPUTS:
            shutil.copyfile(SOURCE / name, build_dir / name)
        _run(
            [
                npm,
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--fetch-timeout=20000",
                "--fetch-retries=1",
            ],
            build_dir,
        )
        lock = json.loads((build_dir / "package-lock.json").read_text())
        versions = {
            _package_of(path): info["version"]
            for path, info in lock["packages"].items()
            if path.startswith("node_modules/")
        }
        banner = (
            f"/*! ai {versions['ai']}, @ai-sdk/gateway {versions['@ai-sdk/gateway']}: "
            f"bundled by django-gateway-realtime (vendor/build.py). "
            f"Licenses: {LICENSES} */"
        )
        out.mkdir(parents=True, exist_ok=True)
        metafile = build_dir / "meta.json"
        _run(
            [
                str(build_dir / "node_modules" / ".bin" / "esbuild"),
                "entry.mjs",
                "--bundle",
                "--format=esm",
                "--platform=browser",
                "--target=es2022",
                "--minify",
                "--legal-comments=none",
                "--charset=utf8",
                f"--banner:js={banner}",
                f"--metafile={metafile}",
                f"--outfile={out / BUNDLE}",
                "--log-level=error",
            ],
            build_dir,
        )
        meta = json.loads(metafile.read_text())
        (output,) = meta["outputs"].values()
        bundled = sorted(
            {
                _package_of(path)
                for path, used in output["inputs"].items()
                if "node_modules/" in path and used["bytesInOutput"] > 0
            }
        )
        sections = [
            "Third-party software bundled in ai-sdk.min.mjs, built by vendor/build.py\n"
            "from vendor/ai-sdk/package-lock.json. Each package's license follows.\n"
        ]
        infos = {
            name: json.loads((build_dir / "node_modules" / name / "package.json").read_text())
            for name in bundled
        }
        for name in bundled:
            info = infos[name]
            text = _license_text(build_dir / "node_modules" / name, name, info, infos)
            sections.append(
                f"{'=' * 72}\n{name} {info['version']} ({info.get('license', 'see below')})\n"
                f"{'=' * 72}\n\n{text}\n"
            )
        (out / LICENSES).write_text("\n".join(sections), encoding="utf-8")
    return {name: (out / name).stat().st_size for name in (BUNDLE, LICENSES)}


def check() -> int:
    """Build aside and compare with the committed files; 0 when they are the same bytes."""
    with tempfile.TemporaryDirectory(prefix="gateway-realtime-vendor-check-") as scratch:
        out = Path(scratch) / "out"
        try:
            build(out, work=Path(scratch))
        except BuildError as error:
            print(f"vendor-check: {error}", file=sys.stderr)
            return 1
        differ = [
            name
            for name in (BUNDLE, LICENSES)
            if (out / name).read_bytes() != (TARGET / name).read_bytes()
        ]
    if differ:
        print(
            f"vendor-check: {', '.join(differ)} differ from what the lock builds; "
            "run `make vendor`",
            file=sys.stderr,
        )
        return 1
    print(f"vendor-check: {BUNDLE} and {LICENSES} are what vendor/ai-sdk/ builds")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TARGET, help="folder for the two files")
    parser.add_argument(
        "--check",
        action="store_true",
        help="build into a temporary folder and compare with the committed files",
    )
    args = parser.parse_args(argv)
    if args.check:
        return check()
    try:
        sizes = build(args.out)
    except BuildError as error:
        print(f"vendor: {error}", file=sys.stderr)
        return 1
    for name, size in sizes.items():
        print(f"vendor: {args.out / name} ({size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
