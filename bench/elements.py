"""``python -m bench.elements``: what the voice elements cost a page.

    python -m bench.elements [--runs 10] [--sizes-only]

Prints, then repeats as one JSON line at the end:

- the size of the vendored AI SDK bundle
  (``gateway_realtime/static/gateway_realtime/vendor/ai-sdk.min.mjs``) raw,
  gzipped (level 9) and, when the ``brotli`` module is importable, brotli'd
  (quality 11), and the same for the app's own element modules (the module
  graph of ``elements.mjs`` but the bundle, and ``elements.css``);
- the time from "talk" pressed to the voice element's ``state="listening"``:
  ``make demo``'s site (``python -m example_project.demo``: example_project,
  runserver, the built-in Gateway emulator, a throw-away SQLite file) in a
  child process, Debian's Chromium through Playwright with a fake microphone
  (a generated tone), logged in as the demo user; each run loads the page
  afresh, presses talk with a real click and waits for ``listening``. The
  clock starts in the page when the click reaches the element and stops when
  ``gateway-realtime:state`` says ``listening``; the setup request's own time
  comes from the page's resource timing. Also: how long after navigation
  the three elements are defined (the module graph fetched, parsed and run).

Everything is on 127.0.0.1 and the emulator answers mints at once, so the
times are the browser's and the site's work, not a Gateway round trip. Not
part of ``make bench``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

from bench.stats import percentile

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "gateway_realtime" / "static" / "gateway_realtime"
BUNDLE = STATIC / "vendor" / "ai-sdk.min.mjs"
ENTRY = STATIC / "elements.mjs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
]
ELEMENTS = ["gateway-realtime-voice", "gateway-realtime-dictation", "gateway-realtime-speech"]
IMPORT = re.compile(r"""(?:^|\s|;)(?:import|export)\s[^'"]*?['"](\./[^'"]+)['"]""", re.M)

#: Installed before the page's own scripts: a capture listener on the voice
#: element sees the click when it reaches the element (clicks in its shadow
#: root are composed), a state listener sees `listening` or `error`.
TIMING = """
window.benchTiming = {};
window.addEventListener("DOMContentLoaded", () => {
  const voice = document.querySelector("gateway-realtime-voice");
  const t = window.benchTiming;
  if (!voice) return;  // the login page
  voice.addEventListener("click", () => { if (t.pressed == null) t.pressed = performance.now(); },
                         { capture: true });
  voice.addEventListener("gateway-realtime:state", (event) => {
    const state = event.detail.state;
    if (state === "listening" && t.listening == null) t.listening = performance.now();
    if (state === "error" && t.error == null) t.error = voice.shadowRoot.textContent.trim();
  });
  Promise.all(ELEMENTS.map((name) => customElements.whenDefined(name))).then(() => {
    t.defined = performance.now();
  });
});
""".replace("ELEMENTS", json.dumps(ELEMENTS))

SETUP_FETCH = """(url) => {
  const entries = performance.getEntriesByType("resource").filter((e) => e.name.endsWith(url));
  return entries.length ? entries[entries.length - 1].duration : null;
}"""


# Sizes ------------------------------------------------------------------------


def compressed_sizes(data: bytes) -> dict[str, int]:
    """``raw``, ``gzip`` (level 9) and, when the module is importable, ``brotli`` (quality 11)."""
    sizes = {"raw": len(data), "gzip": len(gzip.compress(data, compresslevel=9, mtime=0))}
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        return sizes
    sizes["brotli"] = len(brotli.compress(data, quality=11))
    return sizes


def module_graph(entry: Path, *, skip: Path) -> list[Path]:
    """``entry`` and the relative modules it imports, transitively, but ``skip``."""
    seen: list[Path] = []
    todo = [entry.resolve()]
    while todo:
        path = todo.pop()
        if path in seen or path == skip.resolve():
            continue
        seen.append(path)
        for spec in IMPORT.findall(path.read_text()):
            todo.append((path.parent / spec).resolve())
    return sorted(seen)


def sizes() -> dict[str, Any]:
    ours = [*module_graph(ENTRY, skip=BUNDLE), STATIC / "elements.css"]
    own = b"".join(path.read_bytes() for path in ours)
    return {
        "bundle": compressed_sizes(BUNDLE.read_bytes()),
        "elements": {
            **compressed_sizes(own),
            "files": [str(path.relative_to(STATIC)) for path in ours],
        },
    }


# The demo site ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_tone_wav(path: Path, rate: int = 48000) -> Path:
    """1.2 s of 440 Hz then 2 s of silence, as the browser tests' fake microphone plays."""
    frames = bytearray()
    for n in range(int(1.2 * rate)):
        frames += struct.pack("<h", int(0.5 * 32767 * math.sin(2 * math.pi * 440 * n / rate)))
    frames += bytes(2 * int(2.0 * rate))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return path


def start_demo(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    """``python -m example_project.demo`` on a free port; returns it and its origin."""
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "DJANGO_"))},
        "SQLITE_PATH": str(workdir / "demo.sqlite3"),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "example_project.demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "password:" in line:
            break
    else:
        raise RuntimeError("the demo exited before it was ready")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("the demo site did not start listening")


def stop_demo(proc: subprocess.Popen[str]) -> None:
    proc.terminate()  # the demo takes SIGTERM like Ctrl-C and stops its emulator
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def log_in(page: Any, site: str) -> None:
    from example_project.demo import DEMO_PASSWORD, DEMO_USERNAME

    page.goto(site + "/accounts/login/")
    page.fill("#id_username", DEMO_USERNAME)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(site + "/")


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "runs": [round(v, 1) for v in values],
        "p50": round(percentile(values, 50), 1),
        "p90": round(percentile(values, 90), 1),
    }


def talk_timings(runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: `make browser-deps` installs it")
    with tempfile.TemporaryDirectory(prefix="bench-elements-") as tmp:
        workdir = Path(tmp)
        wav = write_tone_wav(workdir / "tone.wav")
        proc, site = start_demo(workdir)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM),
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}"],
                    headless=True,
                )
                context = browser.new_context(permissions=["microphone"])
                context.set_default_timeout(30_000)
                context.add_init_script(TIMING)
                log_in(context.new_page(), site)
                talk, setup, defined = [], [], []
                for _ in range(runs):
                    timing = one_run(context, site)
                    talk.append(timing["listening"] - timing["pressed"])
                    defined.append(timing["defined"])
                    if timing["setup"] is not None:
                        setup.append(timing["setup"])
                version = browser.version
                browser.close()
        finally:
            stop_demo(proc)
    return {
        "chromium": version,
        "talk_to_listening_ms": summary(talk),
        "setup_request_ms": summary(setup),
        "elements_defined_ms": summary(defined),
    }


def one_run(context: Any, site: str) -> dict[str, Any]:
    page = context.new_page()
    try:
        page.goto(site + "/")
        page.wait_for_function("() => window.benchTiming.defined != null")
        voice = page.locator("gateway-realtime-voice")
        voice.locator("[part~='talk-button']").click()
        page.wait_for_function(
            "() => window.benchTiming.listening != null || window.benchTiming.error != null"
        )
        timing = page.evaluate("window.benchTiming")
        if timing.get("error") is not None:
            raise RuntimeError(f"the voice element failed: {timing['error']}")
        timing["setup"] = page.evaluate(SETUP_FETCH, voice.get_attribute("setup-url"))
        return timing
    finally:
        page.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.elements", description=__doc__)
    parser.add_argument("--runs", type=int, default=10, help="presses of talk (default 10)")
    parser.add_argument("--sizes-only", action="store_true", help="no browser, sizes only")
    args = parser.parse_args(argv)

    result: dict[str, Any] = sizes()
    bundle, own = result["bundle"], result["elements"]
    print(f"AI SDK bundle ({BUNDLE.name}): " + ", ".join(f"{k} {v:,} B" for k, v in bundle.items()))
    print(
        f"element modules ({len(own['files'])} files): "
        + ", ".join(f"{k} {v:,} B" for k, v in own.items() if k != "files")
    )
    if not args.sizes_only:
        result.update(talk_timings(args.runs))
        result["n"] = args.runs
        print(f"Chromium {result['chromium']}, {args.runs} runs, make demo's site and emulator:")
        for key, label in (
            ("talk_to_listening_ms", "talk pressed -> listening"),
            ("setup_request_ms", "  of which the setup request"),
            ("elements_defined_ms", "elements defined after navigation"),
        ):
            print(f"  {label}: p50 {result[key]['p50']} ms, p90 {result[key]['p90']} ms")
    print(json.dumps(result, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
