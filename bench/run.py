"""``make bench``: the time from "talk" to a token, next to its anchor, and a Gateway stall.

Starts everything on loopback: the stand-in gateway (the package's emulator,
in a child process, answering each mint after 50 ms like a real Gateway round
trip), the bench site under gunicorn as docs/deployment.md recommends for a
2-core machine, and the AI SDK docs' setup endpoint on Node. Then the same
site against a Gateway that stalls 20 s on every mint (``bench.stall``).
Prints a table, then one JSON line (``bench.stats``).

``BENCH_FULL=1`` (or ``--full``) runs every concurrency for the plot, longer
phases, the references, the capacity search in full and 1..8 workers; the
default quick run is a smoke test for CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.gateway import RemoteEmulator
from bench.loadgen import CallFactory, HttpTarget, run_load, run_open_loop
from bench.procs import ROOT, CpuMeter, GroupCpuMeter, Server, free_port, gunicorn, pids_named
from bench.stall import run_stall
from bench.stats import (
    Result,
    format_cpu_table,
    format_table,
    json_line,
    merge_results,
    ratio,
)

CACHE = ROOT / ".bench"
PG_URL = "postgres://postgres@127.0.0.1:5432/gateway_realtime_bench"
REDIS_URL = "redis://127.0.0.1:6379/13"
MODEL = "openai/gpt-realtime-2"
SAME_ORIGIN_JSON = {
    "Content-Type": "application/json",
    "Sec-Fetch-Site": "same-origin",
}
SETUP_BODY = json.dumps({"sessionConfig": {}}).encode()
# What the stand-in Gateway takes to answer a mint: a realistic round trip.
GATEWAY_LATENCY_S = 0.05
# The Gateway stall: every mint held this long (longer than any deadline).
STALL_S = 20.0
# The deployment docs/deployment.md recommends for this 2-core machine:
# one gunicorn gthread worker per core, 12 threads each (8 may wait on the
# Gateway, GATEWAY_REALTIME_MAX_CONCURRENT_MINTS in bench/settings.py; the
# rest keep serving pages).
WORKERS = 2
THREADS = 12
# Our p50 may be this much above the anchor's for a rate to count as sustained.
CAPACITY_SLACK = 1.25


@dataclass
class Profile:
    concurrencies: list[int]
    headline: int  # the concurrency the headline figures are taken at
    seconds: float
    max_requests: int
    workers: list[int]
    rows: int
    scale_concurrency: int
    handshake_mints: int
    # Unmeasured requests per client thread first: connections, pools and
    # Node's JIT warm up, or a short phase measures the warm-up.
    warmup: int
    # The side-by-side scenarios take turns in this many slices of
    # seconds / rounds each, so that a change in the machine's speed during
    # the run falls on all of them alike.
    rounds: int
    # Concurrencies at which the references (direct mint, no-op endpoint,
    # pages) are measured next to ours and the anchor.
    references: list[int]
    # Offered mint rates (per second) the capacity search climbs, and how
    # long each is held.
    capacity_rates: list[float]
    capacity_seconds: float


QUICK = Profile(
    concurrencies=[1, 8, 32],
    headline=8,
    seconds=2.5,
    max_requests=3000,
    workers=[1, 4],
    # A million rows take about a minute to load on a busy 2-core machine;
    # the quick run is a smoke test, so it checks the same path with fewer.
    rows=200_000,
    scale_concurrency=8,
    handshake_mints=1000,
    warmup=10,
    rounds=2,
    references=[],
    capacity_rates=[25, 50],
    capacity_seconds=1.5,
)
FULL = Profile(
    concurrencies=[1, 2, 4, 8, 16, 32],
    headline=8,
    seconds=10.0,
    max_requests=40_000,
    workers=[1, 2, 4, 8],
    rows=1_000_000,
    scale_concurrency=8,
    handshake_mints=1000,
    warmup=30,
    rounds=5,
    references=[1, 8],
    capacity_rates=[25, 50, 75, 100, 125, 150, 200, 250, 300],
    capacity_seconds=4.0,
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# Services -------------------------------------------------------------------


def prepare_database(use_services: bool) -> str:
    """A fresh, empty bench database: PostgreSQL when it runs here, else SQLite."""
    if use_services and reachable("127.0.0.1", 5432):
        import psycopg

        url = os.environ.get("BENCH_DATABASE_URL", PG_URL)
        name = url.rsplit("/", 1)[1]
        admin = url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        os.environ["BENCH_DATABASE_URL"] = url
        return "postgresql"
    os.environ.pop("BENCH_DATABASE_URL", None)
    path = CACHE / "bench.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.environ["BENCH_SQLITE_PATH"] = str(path)
    return "sqlite"


def prepare_cache(use_services: bool) -> str:
    if use_services and reachable("127.0.0.1", 6379):
        os.environ["BENCH_REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", REDIS_URL)
        import redis

        redis.Redis.from_url(os.environ["BENCH_REDIS_URL"]).flushdb()
        return "redis"
    os.environ.pop("BENCH_REDIS_URL", None)
    return "locmem"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    import django

    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        total_kb = int(meminfo.read_text().split()[1])
        info["memory_gib"] = round(total_kb / 1024 / 1024, 1)
    node = shutil.which("node")
    if node:
        info["node"] = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        import psycopg

        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            info["postgresql"] = row[0] if row else None
    else:
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    return info


def setup_django(users: int) -> list[str]:
    """Migrate, create ``users`` logged-in users, return their cookie headers."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.core.management import call_command

    # The site's own session engine (cached_db): in the cache and the database.
    SessionStore = import_module(settings.SESSION_ENGINE).SessionStore

    call_command("migrate", verbosity=0)
    cookies = []
    user_model = get_user_model()
    for n in range(users):
        user = user_model.objects.create_user(username=f"bench{n}", password=None)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
    return cookies


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


# The anchor -----------------------------------------------------------------


def prepare_anchor() -> Path | None:
    """Install the pinned ``@ai-sdk/gateway`` into .bench/anchor; None without Node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        log("node/npm not found: the anchor is not measured")
        return None
    target = CACHE / "anchor"
    target.mkdir(parents=True, exist_ok=True)
    source = ROOT / "bench" / "anchor"
    changed = False
    for name in ("package.json", "package-lock.json", "server.mjs"):
        new = (source / name).read_bytes()
        old = target / name
        if not old.exists() or old.read_bytes() != new:
            old.write_bytes(new)
            changed = name != "server.mjs" or changed
    if changed or not (target / "node_modules" / "@ai-sdk" / "gateway").exists():
        log("installing @ai-sdk/gateway from the npm registry into .bench/anchor")
        try:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=target,
                check=True,
                timeout=300,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            # Offline, or the registry is down: measure everything else.
            log(f"npm ci failed ({error}): the anchor is not measured")
            return None
    return target


def start_anchor(directory: Path, base_url: str) -> Server:
    port = free_port()
    env = dict(os.environ)
    env.update(AI_GATEWAY_API_KEY="emulator-key", AI_GATEWAY_BASE_URL=base_url, PORT=str(port))
    node = shutil.which("node")
    assert node is not None
    return Server("anchor", [node, str(directory / "server.mjs")], port, env)


# TLS ------------------------------------------------------------------------


def self_signed_certificate(directory: Path) -> tuple[str, str] | None:
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return str(cert), str(key)


# Measurements ---------------------------------------------------------------


def direct_mint_factory() -> CallFactory:
    """Our GatewayClient, called in this process: the Gateway round trip plus the client."""
    from gateway_realtime.client import get_client
    from gateway_realtime.credentials import Credential
    from gateway_realtime.protocol import Kind

    credential = Credential(value="emulator-key", method="api-key", source="bench")

    def make() -> Callable[[], bool]:
        client = get_client()

        def call() -> bool:
            try:
                client.mint(kind=Kind.REALTIME, model=MODEL, credential=credential, expires_in=600)
            except Exception:
                return False
            return True

        return call

    return make


def naive_mint_factory(origin: str, verify: str | bool) -> CallFactory:
    """What a site writes without thinking about pooling: one ``requests.post`` per mint."""
    import requests

    headers = {
        "Authorization": "Bearer emulator-key",
        "ai-gateway-protocol-version": "0.0.1",
        "ai-gateway-auth-method": "api-key",
        "Content-Type": "application/json",
    }
    body = json.dumps({"model": MODEL, "expiresIn": 600})

    def make() -> Callable[[], bool]:
        def call() -> bool:
            try:
                response = requests.post(
                    origin + "/v1/realtime/client-secrets",
                    data=body,
                    headers=headers,
                    timeout=10,
                    verify=verify,
                )
            except requests.RequestException:
                return False
            return response.status_code == 200

        return call

    return make


class Bench:
    def __init__(
        self,
        profile: Profile,
        cookies: list[str],
        emulators: list[RemoteEmulator],
        services: Iterable[str] = (),
    ) -> None:
        self.profile = profile
        self.cookies = cookies
        self.emulators = emulators
        self.services = set(services)  # "postgresql", "redis": whose CPU to count
        self.results: list[Result] = []

    def other_processes(self) -> dict[str, list[int]]:
        """The machine's other busy processes during a scenario, by kind."""
        groups = {
            "postgresql": [],
            "redis": [],
            "emulator": [emulator.pid for emulator in self.emulators],
            "load generator": [os.getpid()],
        }
        named = pids_named(["postgres", "redis-server"])
        if "postgresql" in self.services:
            groups["postgresql"] = named["postgres"]
        if "redis" in self.services:
            groups["redis"] = named["redis-server"]
        return {kind: pids for kind, pids in groups.items() if pids}

    def measure(
        self,
        name: str,
        factory: CallFactory,
        concurrency: int,
        cpu_pids: list[int] | None = None,
        max_requests: int | None = None,
        max_seconds: float | None = None,
        warmup: int | None = None,
        record: bool = True,
    ) -> Result:
        # The emulator keeps every request it saw; a long run would fill memory.
        for emulator in self.emulators:
            emulator.reset()
        meter = CpuMeter(cpu_pids or [])
        others = GroupCpuMeter(self.other_processes)

        def start() -> None:
            others.start()
            meter.start()

        def stop() -> None:
            meter.stop()
            others.stop()

        result = run_load(
            name,
            factory,
            concurrency=concurrency,
            max_requests=max_requests or self.profile.max_requests,
            max_seconds=max_seconds or self.profile.seconds,
            warmup=self.profile.warmup if warmup is None else warmup,
            on_start=start,
            on_stop=stop,
        )
        if cpu_pids:
            result.cpu_s = meter.seconds
        result.cpu_others_s = others.seconds
        if record:
            self._record(result)
        return result

    def side_by_side(
        self, scenarios: list[tuple[str, str, CallFactory, list[int] | None]], concurrency: int
    ) -> dict[str, Result]:
        """Measure ``(key, name, factory, cpu_pids)`` scenarios in turns, merged per scenario.

        Each round runs every scenario for ``seconds / rounds`` (the first
        round with the full warm-up), so that the VM's speed, which drifts
        during a run, weighs on every scenario alike.
        """
        rounds = self.profile.rounds
        parts: dict[str, list[Result]] = {key: [] for key, *_ in scenarios}
        for round_ in range(rounds):
            for key, name, factory, pids in scenarios:
                parts[key].append(
                    self.measure(
                        name,
                        factory,
                        concurrency,
                        pids,
                        max_requests=max(1, self.profile.max_requests // rounds),
                        max_seconds=self.profile.seconds / rounds,
                        warmup=self.profile.warmup if round_ == 0 else min(5, self.profile.warmup),
                        record=False,
                    )
                )
        merged = {key: merge_results(results) for key, results in parts.items()}
        for result in merged.values():
            self._record(result)
        return merged

    def _record(self, result: Result) -> None:
        self.results.append(result)
        name, concurrency = result.name, result.concurrency
        log(
            f"{name} c={concurrency}: p50 {result.p50:.2f} ms, "
            f"{result.throughput:.0f} req/s, {result.errors} errors"
        )

    def post(self, port: int, path: str) -> CallFactory:
        headers = dict(SAME_ORIGIN_JSON, Origin=f"http://127.0.0.1:{port}")
        target = HttpTarget(port=port, path=path, method="POST", body=SETUP_BODY, headers=headers)
        return target.factory(self.cookies)

    def get(self, port: int, path: str, must_contain: bytes | None = None) -> CallFactory:
        return HttpTarget(port=port, path=path, must_contain=must_contain).factory(self.cookies)


def _fixed_work_ms(result: Result) -> float | None:
    """CPU per request of the processes whose work does not depend on the database."""
    by_process = result.cpu_ms_per_request_by_process()
    parts = [by_process.get("emulator"), by_process.get("load generator")]
    if any(part is None for part in parts):
        return None
    return sum(part for part in parts if part is not None)


def tag_available() -> bool:
    from importlib.util import find_spec

    return find_spec("gateway_realtime.templatetags.gateway_realtime") is not None


def fill_audit_rows(count: int, user_ids: list[int], using: str = "default") -> float:
    """Insert ``count`` historical audit rows in one statement; returns seconds taken."""
    from bench.rows import bulk_insert

    started = time.perf_counter()
    bulk_insert(count, user_ids, using)
    return time.perf_counter() - started


def rows_database(database: str) -> tuple[str, dict[str, str]]:
    """The scale phase's second database: its name, and the environment of a site serving it."""
    if database == "postgresql":
        base, name = os.environ["BENCH_DATABASE_URL"].rsplit("/", 1)
        return f"{name}_rows", {"BENCH_DATABASE_URL": f"{base}/{name}_rows"}
    path = str(CACHE / "bench-rows.sqlite3")
    return path, {"BENCH_SQLITE_PATH": path}


def copy_database(database: str, rows_name: str) -> None:
    """Copy the migrated bench database (users, sessions) to ``rows_name``."""
    from django.db import connections

    connections.close_all()
    if database == "postgresql":
        import psycopg

        base, name = os.environ["BENCH_DATABASE_URL"].rsplit("/", 1)
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{rows_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{rows_name}" TEMPLATE "{name}"')
        return
    import sqlite3

    for suffix in ("", "-wal", "-shm"):
        Path(f"{rows_name}{suffix}").unlink(missing_ok=True)
    source = sqlite3.connect(os.environ["BENCH_SQLITE_PATH"])
    target = sqlite3.connect(rows_name)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def capacity_search(
    bench: Bench, site: Server, anchor: Server | None
) -> tuple[float | None, list[dict[str, Any]]]:
    """The highest offered mint rate ours sustains with its p50 within 1.25 x the anchor's.

    Climbs ``profile.capacity_rates``, ours then the anchor at each (open
    loop, ``bench.loadgen.run_open_loop``), and stops at the first rate ours
    does not sustain: more than 1 % errors, fewer than 95 % of the offered
    mints answered, or its p50 beyond the slack. Bounded by the rates' count
    times twice ``capacity_seconds`` (plus the warm-ups).
    """
    if anchor is None:
        return None, []
    best: float | None = None
    steps: list[dict[str, Any]] = []
    mint = bench.post(site.port, "/api/realtime-token/realtime/")
    setup = bench.post(anchor.port, "/api/realtime/setup")
    seconds = bench.profile.capacity_seconds
    for rate in bench.profile.capacity_rates:
        threads = min(64, max(8, math.ceil(rate * 0.2)))
        offered = max(1, int(rate * seconds))
        runs = {}
        for key, name, factory in (
            ("ours", "mint endpoint (ours)", mint),
            ("anchor", "anchor (Node getToken)", setup),
        ):
            for emulator in bench.emulators:
                emulator.reset()
            result = run_open_loop(
                f"{name}, open loop", factory, rate=rate, seconds=seconds, threads=threads
            )
            bench._record(result)
            runs[key] = result
        ours, theirs = runs["ours"], runs["anchor"]
        slack = ratio(ours.p50, theirs.p50)
        sustained = (
            ours.errors <= 0.01 * offered
            and ours.ok >= 0.95 * offered
            and slack is not None
            and slack <= CAPACITY_SLACK
        )
        steps.append(
            {
                "rate": rate,
                "ours_p50_ms": round(ours.p50, 1) if ours.ok else None,
                "anchor_p50_ms": round(theirs.p50, 1) if theirs.ok else None,
                "ratio": slack,
                "ours_errors": ours.errors,
                "sustained": sustained,
            }
        )
        if not sustained:
            break
        best = rate
    return best, steps


def stall_scenario(bench: Bench, cookies: list[str], env_extra: dict[str, str]) -> dict[str, Any]:
    """The Gateway stalls 20 s on every mint: 10 users, then 30; do pages still answer?"""
    stalled = RemoteEmulator(
        api_keys=("emulator-key",), keep_alive_timeout=300.0, mint_delay=GATEWAY_LATENCY_S
    )
    try:
        site = gunicorn(
            WORKERS, THREADS, server_env(BENCH_GATEWAY_BASE_URL=stalled.base_url, **env_extra)
        )
        try:
            headers = dict(SAME_ORIGIN_JSON, Origin=f"http://127.0.0.1:{site.port}")
            # A site that has been running: every thread warm (imports,
            # database connections), the Gateway healthy. Then it stalls.
            for path, factory in (
                ("page", bench.get(site.port, "/bench/page/")),
                ("mint", bench.post(site.port, "/api/realtime-token/realtime/")),
            ):
                run_load(
                    f"stall site warm-up ({path})",
                    factory,
                    concurrency=WORKERS * THREADS,
                    max_requests=4 * WORKERS * THREADS,
                    max_seconds=30,
                    warmup=2,
                )
            stalled.set_mint_delay(STALL_S)
            run = run_stall(
                site.port,
                cookies,
                "/api/realtime-token/realtime/",
                headers,
                SETUP_BODY,
                "/bench/page/",
            )
        finally:
            site.stop()
    finally:
        stalled.stop()
    summary = run.summary()
    log(f"stall: {json.dumps(summary)}")
    return {
        "stall_page_max_s": run.page_max_s,
        "stall_fail_fast_p50_ms": run.fail_fast_p50_ms,
        "stall": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--full", action="store_true", default=os.environ.get("BENCH_FULL") == "1")
    parser.add_argument(
        "--no-services",
        action="store_true",
        default=os.environ.get("BENCH_NO_SERVICES") == "1",
        help="SQLite and local memory even when PostgreSQL/Redis run here",
    )
    parser.add_argument("--save", type=Path, help="also write every result as JSON here")
    args = parser.parse_args(argv)
    profile = FULL if args.full else QUICK
    started = time.monotonic()
    CACHE.mkdir(exist_ok=True)

    database = prepare_database(not args.no_services)
    cache = prepare_cache(not args.no_services)
    log(f"{'full' if args.full else 'quick'} run; database {database}, cache {cache}")
    anchor_dir = prepare_anchor()
    machine_info = machine()

    metrics: dict[str, Any] = {
        "mode": "full" if args.full else "quick",
        "database": database,
        "gateway_latency_ms": round(GATEWAY_LATENCY_S * 1000),
        "deployment": (
            f"gunicorn {WORKERS} gthread workers x {THREADS} threads, "
            "cached_db sessions, persistent database connections"
        ),
    }
    # Known before Django starts, so that the bench process has a "rows" alias.
    rows_name, rows_env = rows_database(database)
    os.environ["BENCH_ROWS_DATABASE"] = rows_name
    with ExitStack() as stack:
        emulator = RemoteEmulator(
            api_keys=("emulator-key",), keep_alive_timeout=300.0, mint_delay=GATEWAY_LATENCY_S
        )
        stack.callback(emulator.stop)
        os.environ["BENCH_GATEWAY_BASE_URL"] = emulator.base_url
        # One user per client thread, and 41 for the stall scenario.
        cookies = setup_django(
            users=max([*profile.concurrencies, profile.scale_concurrency, 64, 41])
        )
        copy_database(database, rows_name)
        bench = Bench(profile, cookies, [emulator], services={database, cache})

        threads = THREADS
        site = gunicorn(WORKERS, threads, server_env())
        stack.callback(site.stop)
        anchor = start_anchor(anchor_dir, emulator.base_url) if anchor_dir else None
        if anchor:
            stack.callback(anchor.stop)
        has_tag = tag_available()

        # 1: time to a token, ours next to the anchor, at each concurrency,
        # with the references (the framework alone, a bare Gateway call, a
        # page without and with the tag) where the profile asks for them.
        by_concurrency: dict[int, dict[str, Result]] = {}
        for c in profile.concurrencies:
            scenarios: list[tuple[str, str, CallFactory, list[int] | None]] = [
                (
                    "ours",
                    "mint endpoint (ours)",
                    bench.post(site.port, "/api/realtime-token/realtime/"),
                    site.pids(),
                ),
            ]
            if anchor:
                scenarios.append(
                    (
                        "anchor",
                        "anchor (Node getToken)",
                        bench.post(anchor.port, "/api/realtime/setup"),
                        anchor.pids(),
                    )
                )
            if c in profile.references:
                scenarios += [
                    ("direct", "direct mint (GatewayClient)", direct_mint_factory(), None),
                    (
                        "noop",
                        "no-op DRF endpoint",
                        bench.post(site.port, "/bench/noop/"),
                        site.pids(),
                    ),
                    ("page", "page without tag", bench.get(site.port, "/bench/page/"), site.pids()),
                ]
                if has_tag:
                    scenarios.append(
                        (
                            "page_tag",
                            "page with tag",
                            bench.get(site.port, "/bench/page-tag/", must_contain=b'"vcst_'),
                            site.pids(),
                        )
                    )
            by_concurrency[c] = bench.side_by_side(scenarios, c)

        def time_to_token(c: int, pct: int) -> float | None:
            row = by_concurrency.get(c, {})
            if "ours" not in row or "anchor" not in row:
                return None
            if pct == 50:
                return ratio(row["ours"].p50, row["anchor"].p50)
            return ratio(row["ours"].p99, row["anchor"].p99)

        metrics["time_to_token_ratio_p50_c1"] = time_to_token(1, 50)
        metrics["time_to_token_ratio_p50_c8"] = time_to_token(8, 50)
        metrics["time_to_token_ratio_p99_c8"] = time_to_token(8, 99)
        metrics["time_to_token_ratio_p50_c32"] = time_to_token(32, 50)
        metrics["time_to_token_ms"] = {
            c: {
                key: {"p50": round(r.p50, 1), "p99": round(r.p99, 1), "errors": r.errors}
                for key, r in row.items()
                if key in ("ours", "anchor") and r.ok
            }
            for c, row in by_concurrency.items()
        }

        headline = by_concurrency[profile.headline]
        ours = headline["ours"]
        # Our server processes' CPU (gunicorn master and workers), ms per mint.
        cpu_per_mint = ours.cpu_ms_per_request
        metrics["cpu_per_mint"] = None if cpu_per_mint is None else round(cpu_per_mint, 3)
        if "anchor" in headline:
            metrics["cpu_per_mint_vs_anchor"] = ratio(
                ours.cpu_ms_per_request, headline["anchor"].cpu_ms_per_request
            )
        # Every process's CPU per request, the server's and the machine's
        # others (PostgreSQL, Redis, the emulator, the load generator): on two
        # cores shared by all of them, this total is what sets the capacity.
        metrics["cpu_all_processes_ms_per_request"] = {
            key: result.cpu_ms_per_request_by_process().get("total")
            for key, result in headline.items()
        }

        # 2: capacity, an open-loop climb of offered mint rates.
        capacity, steps = capacity_search(bench, site, anchor)
        metrics["capacity_mints_per_s"] = capacity
        metrics["capacity_steps"] = steps
        if anchor:
            anchor.stop()

        # 3a: the audit table empty against a copy of the same database with a
        # million rows, each served by a site of its own, taking turns.
        from django.contrib.auth import get_user_model

        from gateway_realtime.models import ClientSecretIssuance

        c = profile.scale_concurrency
        mint_path = "/api/realtime-token/realtime/"
        ClientSecretIssuance.objects.all().delete()
        if database == "postgresql":
            # Settled like the copy below, not full of the rows just deleted.
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {ClientSecretIssuance._meta.db_table}")
        user_ids = list(get_user_model().objects.values_list("pk", flat=True))
        log(f"inserting {profile.rows:,} audit rows")
        metrics["rows_insert_s"] = round(fill_audit_rows(profile.rows, user_ids, "rows"), 1)
        rows_site = gunicorn(WORKERS, threads, server_env(**rows_env))
        try:
            scale = bench.side_by_side(
                [
                    ("empty", "mint, 0 audit rows", bench.post(site.port, mint_path), site.pids()),
                    (
                        "rows",
                        f"mint, {profile.rows:,} audit rows",
                        bench.post(rows_site.port, mint_path),
                        rows_site.pids(),
                    ),
                ],
                c,
            )
        finally:
            rows_site.stop()
        empty, full = scale["empty"], scale["rows"]
        metrics["scale_rows"] = profile.rows
        metrics["scale_ratio_1m"] = ratio(full.p50, empty.p50)
        # What moved the machine's speed between the two anyway: the emulator
        # and the load generator do the same work per mint whatever the size
        # of the audit table (about 1 when the turns did their job).
        metrics["scale_speed_drift"] = ratio(_fixed_work_ms(full), _fixed_work_ms(empty))
        site.stop()

        # 3b: one to eight workers at the same concurrency.
        by_workers = {}
        for workers in profile.workers:
            server = gunicorn(workers, threads, server_env())
            try:
                by_workers[workers] = bench.measure(
                    f"mint, {workers} worker(s) x {threads} threads",
                    bench.post(server.port, mint_path),
                    c,
                    server.pids(),
                )
            finally:
                server.stop()
        metrics["rps_by_workers"] = {w: round(r.throughput, 1) for w, r in by_workers.items()}

        # 4: handshakes to the Gateway per 1,000 mints, over TLS when openssl is here.
        tls_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-tls-")))
        pair = self_signed_certificate(tls_dir)
        if pair:
            tls = RemoteEmulator(
                api_keys=("emulator-key",), tls_cert=pair[0], tls_key=pair[1],
                keep_alive_timeout=300.0, mint_delay=GATEWAY_LATENCY_S,
            )  # fmt: skip
            stack.callback(tls.stop)
            bench.emulators.append(tls)
            ca: str | bool = pair[0]
            metrics["handshakes_over"] = "tls"
        else:
            tls, ca = emulator, False
            metrics["handshakes_over"] = "tcp (no openssl: plain HTTP)"
        env = server_env(BENCH_GATEWAY_BASE_URL=tls.base_url, BENCH_CA_BUNDLE=str(ca))
        server = gunicorn(WORKERS, threads, env)
        try:
            mints = profile.handshake_mints
            app_run = bench.measure(
                f"mint over TLS (ours, {WORKERS}x{threads})",
                bench.post(server.port, mint_path),
                c,
                server.pids(),
                max_requests=mints,
                max_seconds=120,
            )
            # measure() reset the emulator's counter; warm-up mints open
            # connections too, so count them all, per mint made.
            made = app_run.ok + app_run.errors + c * profile.warmup
            ours_handshakes = tls.tcp_connections()
        finally:
            server.stop()
        metrics["server_threads"] = WORKERS * threads
        metrics["handshakes_per_1000"] = round(ours_handshakes * 1000 / made, 1)

        os.environ["BENCH_CA_BUNDLE"] = str(ca)
        os.environ["BENCH_GATEWAY_BASE_URL"] = tls.base_url
        from django.conf import settings

        from gateway_realtime.client import reset_clients

        settings.GATEWAY_REALTIME_BASE_URL = tls.base_url
        reset_clients()
        # One handshake per mint for the naive one, whatever the count: the
        # quick run makes fewer.
        direct_mints = mints if args.full else min(mints, 300)
        client_run = bench.measure(
            "direct mint over TLS (GatewayClient)",
            direct_mint_factory(),
            c,
            max_requests=direct_mints,
            max_seconds=120,
        )
        naive_run = bench.measure(
            "direct mint over TLS (naive requests.post)",
            naive_mint_factory(tls.origin, ca),
            c,
            max_requests=direct_mints,
            max_seconds=120,
        )
        naive_made = naive_run.ok + naive_run.errors + c * profile.warmup
        metrics["naive_handshakes_per_1000"] = round(tls.tcp_connections() * 1000 / naive_made, 1)
        metrics["naive_vs_ours_p50"] = ratio(naive_run.p50, client_run.p50)

        # 5: the Gateway stalls (last: the circuit it opens lives in the
        # shared cache, which nothing after it reads).
        metrics.update(stall_scenario(bench, cookies, {}))

    metrics["elapsed_s"] = round(time.monotonic() - started, 1)
    # Other work on the machine shows up in every number; say how busy it was.
    machine_info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    metrics["headline_concurrency"] = profile.headline
    print()
    print(format_table(bench.results))
    print()
    print("CPU ms per request by process (all of them share the machine's cores):")
    print(format_cpu_table(bench.results))
    print()
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(
            json.dumps(
                {
                    "machine": machine_info,
                    "metrics": metrics,
                    "results": [r.summary() for r in bench.results],
                },
                indent=2,
            )
        )
    print(json_line(metrics))
    return 0
