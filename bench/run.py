"""``python -m bench [token] [stall] [protection] [relay] [--full] [--save FILE]``.

See docs/performance.md and docs/deployment.md ("What protection costs").

- token: the time to a token through the app's endpoint, and through the
  setup route the AI SDK docs show on Node (the anchor, @ai-sdk/gateway's own
  client), both minting from a stand-in Gateway that answers after 50 ms, at
  1, 8 and 32 concurrent users, taking turns;
- stall: what a stalled Gateway costs the rest of the site (``bench.stall``);
- protection: what the same protection costs a healthy but slow, or partly
  failing, Gateway (``bench.protection``);
- relay: what relay mode adds per frame and per session (``bench.relay``).

All four by default. Everything runs on 127.0.0.1: the package's emulator as
the Gateway, the bench site (``bench.settings``) under gunicorn as
docs/deployment.md recommends for 2 cores, PostgreSQL (needed) and Redis
(used when it answers). Every figure is printed with the load average it was
measured under; the last line is one JSON object. ``--full`` (or
``BENCH_FULL=1``) runs longer phases and more sessions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import relay
from bench.load import http_call, run_load
from bench.procs import (
    API_KEY,
    CACHE,
    PG_URL,
    ROOT,
    Server,
    emulator,
    free_port,
    gunicorn,
    log,
    recreate_database,
)
from bench.protection import protection
from bench.stall import USERS as STALL_USERS
from bench.stall import stall
from bench.stats import Result, format_table, load_average, ratio

PARTS = ("token", "stall", "protection", "relay")
MINT_PATH = "/api/realtime-token/realtime/"
ANCHOR_PATH = "/api/realtime/setup"
GATEWAY_LATENCY_S = 0.05
CONCURRENCY = (1, 8, 32)


@dataclass(frozen=True)
class Profile:
    seconds: float  # per scenario and concurrency, over all rounds
    rounds: int  # ours and the anchor take turns, so a drift in speed weighs on both
    warmup: int  # unmeasured requests per user before the first round
    relay_sessions: int
    relay_seconds: float
    protection_seconds: float  # each protection scenario


QUICK = Profile(2.5, rounds=2, warmup=10, relay_sessions=50, relay_seconds=5, protection_seconds=6)
FULL = Profile(10, rounds=5, warmup=30, relay_sessions=200, relay_seconds=20, protection_seconds=15)


def services() -> str | None:
    """Point the bench site at a fresh PostgreSQL database and Redis; the reason if impossible."""
    url = os.environ.setdefault("BENCH_DATABASE_URL", PG_URL)
    reason = recreate_database(url)
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
        import redis

        redis.Redis.from_url(redis_url).flushdb()
        os.environ["BENCH_REDIS_URL"] = redis_url
    except (OSError, ImportError):
        os.environ.pop("BENCH_REDIS_URL", None)  # the local-memory cache
    return reason


def logged_in_users(count: int) -> list[str]:
    """Migrate the bench database and log ``count`` users in; their cookie headers."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.cached_db import SessionStore
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    cookies = []
    for n in range(count):
        user = get_user_model().objects.create_user(username=f"bench{n}", password=None)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
    return cookies


def anchor(base_url: str) -> Server | None:
    """The anchor (bench/anchor/server.mjs), @ai-sdk/gateway installed by ``npm ci``
    into .bench/anchor from the committed lock; None without Node or the registry."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        log("node/npm not found: the anchor is not measured")
        return None
    target = CACHE / "anchor"
    target.mkdir(parents=True, exist_ok=True)
    lock = (ROOT / "bench" / "anchor" / "package-lock.json").read_bytes()
    for name in ("package.json", "package-lock.json", "server.mjs"):
        shutil.copyfile(ROOT / "bench" / "anchor" / name, target / name)
    marker = target / "node_modules" / "installed-lock.json"
    if not (marker.exists() and marker.read_bytes() == lock):
        try:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=target, check=True, timeout=300, stdout=sys.stderr,
            )  # fmt: skip
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            log(f"npm ci failed ({error}): the anchor is not measured")
            return None
        marker.write_bytes(lock)
    port = free_port()
    env = {**os.environ, "AI_GATEWAY_API_KEY": API_KEY, "AI_GATEWAY_BASE_URL": base_url}
    return Server("anchor", [node, str(target / "server.mjs")], port, {**env, "PORT": str(port)})


def token(profile: Profile, cookies: list[str]) -> dict[str, Any]:
    """Ours and the anchor at each concurrency, behind a Gateway that answers after 50 ms."""
    gateway = emulator(GATEWAY_LATENCY_S)
    base_url = f"http://127.0.0.1:{gateway.port}/v4/ai"
    servers = [gateway]
    try:
        site = gunicorn({**os.environ, "BENCH_GATEWAY_BASE_URL": base_url})
        servers.append(site)
        node = anchor(base_url)
        targets = {"ours": (site.port, MINT_PATH)}
        if node:
            servers.append(node)
            targets["anchor"] = (node.port, ANCHOR_PATH)
        results: dict[int, dict[str, Result]] = {}
        for c in CONCURRENCY:
            row = results[c] = {key: Result(key, c) for key in targets}
            for round_ in range(profile.rounds):
                for key, (port, path) in targets.items():
                    row[key].add(
                        run_load(
                            key,
                            http_call(port, path, cookies),
                            concurrency=c,
                            seconds=profile.seconds / profile.rounds,
                            warmup=profile.warmup if round_ == 0 else 2,
                        )
                    )
            log(f"{c} users: " + ", ".join(f"{k} p50 {r.p50:.1f} ms" for k, r in row.items()))
    finally:
        for server in reversed(servers):
            server.stop()
    print(f"Time to a token behind a {GATEWAY_LATENCY_S * 1000:.0f} ms Gateway:")
    print(format_table(r for row in results.values() for r in row.values()))
    out: dict[str, Any] = {"gateway_latency_ms": GATEWAY_LATENCY_S * 1000}
    for c, row in results.items():
        out[f"c{c}"] = {key: r.summary() for key, r in row.items()}
        if "anchor" in row:
            ours, theirs = row["ours"], row["anchor"]
            out[f"c{c}"]["ratio_p50"] = ratio(ours.p50, theirs.p50)
            out[f"c{c}"]["ratio_p99"] = ratio(ours.p99, theirs.p99)
    return out


def figures(out: dict[str, Any]) -> dict[str, Any]:
    """The named figures docs/performance.md and the issues quote, from a run's results."""
    named: dict[str, Any] = {}
    token = out.get("token", {})
    for c, stat in ((1, "p50"), (8, "p50"), (8, "p99")):
        value = token.get(f"c{c}", {}).get(f"ratio_{stat}")
        if value is not None:
            named[f"time_to_token_ratio_{stat}_c{c}"] = value
    c32 = token.get("c32", {}).get("ours")
    if c32 is not None:
        named["c32_errors"] = c32["errors"]
    guarded = out.get("protection", {})
    for latency in ("0_9", "2_5"):
        if f"slow_healthy_{latency}" in guarded:
            named[f"slow_healthy_success_{latency}"] = guarded[f"slow_healthy_{latency}"]["success"]
    partial = [run for key, run in guarded.items() if key.startswith("partial_failure_")]
    if partial:
        named["partial_failure_success"] = min(run["success"] for run in partial)
    if guarded:
        named["protection_breaker_openings"] = sum(
            run["breaker_openings"] for run in guarded.values()
        )
    for key, suffix in (("stall", ""), ("stall_defaults_2x4", "_defaults_2x4")):
        if key in out:
            named[f"stall_page_max_s{suffix}"] = out[key]["page_max_s"]
            named[f"stall_fail_fast_p50_ms{suffix}"] = out[key]["second_wave_p50_ms"]
    return named


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("parts", nargs="*", metavar="part", help=" ".join(PARTS))
    parser.add_argument("--full", action="store_true", default=os.environ.get("BENCH_FULL") == "1")
    parser.add_argument("--save", type=Path, help="also write the JSON line's object here")
    args = parser.parse_args(argv)
    parts = args.parts or PARTS
    if set(parts) - set(PARTS):
        parser.error(f"the parts are {', '.join(PARTS)}")
    profile = FULL if args.full else QUICK
    out: dict[str, Any] = {
        "mode": "full" if args.full else "quick",
        "cpus": os.cpu_count(),
        "load_average_at_start": load_average(),
    }
    log(f"{out['mode']} run: {', '.join(parts)}")
    if {"token", "stall", "protection"} & set(parts):
        reason = services()
        if reason:
            log(f"token, stall and protection skipped: {reason}")
            out["skipped"] = reason
        else:
            cookies = logged_in_users(max(max(CONCURRENCY), STALL_USERS))
            if "token" in parts:
                out["token"] = token(profile, cookies)
            if "protection" in parts:
                out["protection"] = protection(cookies, MINT_PATH, profile.protection_seconds)
            if "stall" in parts:
                out["stall"] = stall(cookies, dict(os.environ), MINT_PATH)
                out["stall_defaults_2x4"] = stall(
                    cookies, dict(os.environ), MINT_PATH, workers=2, threads=4, app_defaults=True
                )
    if "relay" in parts:
        out["relay"] = relay.bench(profile.relay_sessions, profile.relay_seconds)
    out["load_average_at_end"] = load_average()
    out["figures"] = figures(out)
    load = " ".join(f"{value:.2f}" for value in out["load_average_at_end"])
    print(f"Figures (load average at the end {load}):")
    for name, value in out["figures"].items():
        print(f"  {name}: {value}")
    line = json.dumps(out)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(line + "\n")
    print(line)
    required = os.environ.get("GATEWAY_REALTIME_REQUIRE_SERVICES") == "1"
    return 1 if required and ("skipped" in out or "skipped" in out.get("relay", {})) else 0


if __name__ == "__main__":
    sys.exit(main())
