"""``python -m bench.relay``: what relay mode adds per frame and per session.

    python -m bench.relay [--sessions 200] [--seconds 20] [--frame-ms 100] [--probe-ms 500]

The same clients run three times against the Gateway emulator (a child
process, ``--allow-api-key-ws``):

- **direct**: each client opens the emulator's realtime socket itself, with
  the mint's header authentication (what the relay does upstream);
- **relay**: each client opens ``/ws/gateway-realtime/realtime/`` on one
  uvicorn process serving ``example_project.asgi`` (``DJANGO_DEBUG=0``, the
  in-memory channel layer, PostgreSQL for the ``RelaySession`` rows), as a
  logged-in user of its own (a session cookie, the site's ``Origin``), and
  the relay opens the emulator's socket for it;
- **floor**: each client opens a bare ``websockets`` proxy
  (``bench.relay_floor``, its own process: the same header authentication
  and a pipe each way, no Django), which opens the emulator's socket.

Every client sends ``session-update`` at once and waits for
``session-updated``, then for ``--seconds``: an ``input-audio-append`` frame
every ``--frame-ms`` (100 ms of PCM16 silence at 24 kHz: 4,800 bytes, 6,400
base64 characters, about 6.5 KB on the wire; silence, so the emulator's VAD
stays quiet and the frames are one-way traffic, as a listening microphone's
are) and, every ``--probe-ms``, a probe: ``session-update`` timed until its
``session-updated`` comes back. The probe's round trip is the per-frame
latency; relay (or floor) minus direct is what it adds (both ways through it).
Clients start at random phases so that frames do not arrive in lockstep.

Memory: the server process's RSS (``/proc/<pid>/status`` VmRSS) after one
warm-up session has come and gone, then with every session open and idle,
then at the end of the audio phase (the largest of samples taken once a
second); per session is (RSS - warm RSS) / sessions. CPU: the server
process's user + system seconds during the audio phase, per frame through it
(the clients' frames, and each probe's two). The table printed at the end
puts relay and floor side by side, with the load average: figures count only
from a quiet machine.

``BENCH_RELAY_PROFILE=<file>`` runs the server under cProfile and writes
its profile there when it stops (for ``python -m pstats``).

Needs PostgreSQL (``BENCH_DATABASE_URL``, else ``TEST_DATABASE_URL``, else
postgres://postgres@127.0.0.1:5432/test): it creates and drops a database of
its own on that server. Without it, it prints why and a JSON line with
``"skipped"``, and exits 0. Prints progress, the table, then one JSON line.
Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.procs import ROOT, cpu_seconds, free_port, wait_for_port
from bench.relay_floor import MAX_FRAME, gateway_headers

API_KEY = "bench-relay-key"
MODEL = "openai/gpt-realtime-2"
RELAY_PATH = "/ws/gateway-realtime/realtime/"
DATABASE = "gateway_realtime_bench_relay"
PCM_RATE = 24000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# -- PostgreSQL ---------------------------------------------------------------


def server_url() -> str:
    return (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgres://postgres@127.0.0.1:5432/test"
    )


def database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def recreate_database(url: str) -> str | None:
    """Drop and create the bench's database; the reason when PostgreSQL is not there."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install psycopg[binary])"
    try:
        with psycopg.connect(
            database_url(url, "postgres"), autocommit=True, connect_timeout=3
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    except psycopg.Error as exc:
        return f"PostgreSQL at {urlsplit(url).hostname}:{urlsplit(url).port}: {exc}".strip()
    return None


def drop_database(url: str) -> None:
    import psycopg

    with psycopg.connect(database_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def relay_rows(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(database_url(url, DATABASE)) as conn:
        rows = conn.execute(
            "SELECT closed_by, count(*) FROM gateway_realtime_relaysession GROUP BY closed_by"
        ).fetchall()
    return {str(closed_by): int(count) for closed_by, count in rows}


SETUP = """
import json, django
django.setup()
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
User = get_user_model()
users = []
for i in range({count}):
    user = User(username=f"relay-bench-{{i}}")
    user.set_unusable_password()  # no password hashing: 200 PBKDF2 runs would take a minute
    users.append(user)
User.objects.bulk_create(users)
keys = []
for user in User.objects.filter(username__startswith="relay-bench-").order_by("pk"):
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    keys.append(session.session_key)
print(json.dumps(keys))
"""


# -- the clients ----------------------------------------------------------------


class Client:
    """One realtime socket: audio frames one way, timed probes both ways."""

    def __init__(self, connect_kwargs: dict[str, Any], url: str) -> None:
        self.url = url
        self.connect_kwargs = connect_kwargs
        self.rtts: list[float] = []
        self.frames = 0
        self.error: str | None = None
        self.ws: Any = None
        self._waiting: asyncio.Future[float] | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url, compression=None, max_size=MAX_FRAME, open_timeout=30, **self.connect_kwargs
        )
        self._reader = asyncio.create_task(self._read())
        await self.probe(timeout=30, record=False)  # the session is up

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                waiting = self._waiting
                if (
                    isinstance(message, str)
                    and '"session-updated"' in message[:64]
                    and waiting is not None
                    and not waiting.done()
                ):
                    waiting.set_result(time.perf_counter())
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    async def probe(self, timeout: float = 10, record: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self._waiting = loop.create_future()
        started = time.perf_counter()
        await self.ws.send(json.dumps({"type": "session-update", "config": {"instructions": "p"}}))
        ended = await asyncio.wait_for(self._waiting, timeout)
        if record:
            self.rtts.append((ended - started) * 1000)

    async def run(self, seconds: float, frame_ms: float, probe_ms: float, frame: str) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, frame_ms / 1000))
        start = loop.time()
        next_frame = start
        next_probe = start + random.uniform(0, probe_ms / 1000)
        end = start + seconds
        try:
            while True:
                now = loop.time()
                if now >= end:
                    break
                if now >= next_probe:
                    await self.probe()
                    next_probe += probe_ms / 1000
                    continue
                if now >= next_frame:
                    await self.ws.send(frame)
                    self.frames += 1
                    next_frame += frame_ms / 1000
                    continue
                await asyncio.sleep(max(0.0, min(next_frame, next_probe, end) - now))
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


async def phase(
    name: str,
    clients: list[Client],
    args: argparse.Namespace,
    server_pid: int | None,
    warm_rss: int | None,
    emulator_pid: int,
) -> dict[str, Any]:
    frame = json.dumps(
        {
            "type": "input-audio-append",
            "audio": base64.b64encode(bytes(2 * PCM_RATE * args.frame_ms // 1000)).decode(),
        }
    )
    gate = asyncio.Semaphore(20)  # connects in flight at once

    async def open_one(client: Client) -> None:
        async with gate:
            try:
                await client.open()
            except Exception as exc:
                client.error = f"open: {type(exc).__name__}: {exc}"

    opened_at = time.perf_counter()
    await asyncio.gather(*(open_one(c) for c in clients))
    open_seconds = time.perf_counter() - opened_at
    live = [c for c in clients if c.error is None]
    log(f"{name}: {len(live)}/{len(clients)} sessions open in {open_seconds:.1f} s")
    result: dict[str, Any] = {"open": len(live), "open_seconds": round(open_seconds, 2)}
    samples: list[int] = []
    if server_pid is not None:
        await asyncio.sleep(2)  # let the opening settle
        result["rss_open_mb"] = round(rss_bytes(server_pid) / 2**20, 1)
        cpu_before = cpu_seconds(server_pid)

    async def sample(pid: int) -> None:
        while True:
            await asyncio.sleep(1)
            samples.append(rss_bytes(pid))

    sampler = asyncio.create_task(sample(server_pid)) if server_pid is not None else None
    emulator_before, client_before = cpu_seconds(emulator_pid), time.process_time()
    await asyncio.gather(*(c.run(args.seconds, args.frame_ms, args.probe_ms, frame) for c in live))
    # Everything shares the machine's cores: how busy the other two processes were.
    result["emulator_cpu_seconds"] = round(cpu_seconds(emulator_pid) - emulator_before, 2)
    result["client_cpu_seconds"] = round(time.process_time() - client_before, 2)
    if sampler is not None:
        assert server_pid is not None and warm_rss is not None
        sampler.cancel()
        result["cpu_seconds"] = round(cpu_seconds(server_pid) - cpu_before, 2)
        samples.append(rss_bytes(server_pid))  # a run shorter than a second has one too
        result["rss_load_mb"] = round(max(samples) / 2**20, 1)
        open_kb = (result["rss_open_mb"] * 2**20 - warm_rss) / len(live) / 1024
        load_kb = (max(samples) - warm_rss) / len(live) / 1024
        result["rss_per_session_open_kb"] = round(open_kb, 1)
        result["rss_per_session_load_kb"] = round(load_kb, 1)
    await asyncio.gather(*(c.close() for c in clients))
    rtts = [rtt for c in clients for rtt in c.rtts]
    errors = sorted({c.error for c in clients if c.error})
    frames = sum(c.frames for c in clients)
    if "cpu_seconds" in result:
        through = frames + 2 * len(rtts)
        result["cpu_us_per_frame"] = round(result["cpu_seconds"] * 1e6 / max(1, through), 1)
    result.update(
        {
            "frames": frames,
            "probes": len(rtts),
            "p50_ms": round(statistics.median(rtts), 2) if rtts else None,
            "p99_ms": round(percentile(rtts, 0.99), 2) if rtts else None,
            "max_ms": round(max(rtts), 2) if rtts else None,
            "errors": errors[:5],
        }
    )
    log(f"{name}: {result}")
    return result


# -- main -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--frame-ms", type=int, default=100)
    parser.add_argument("--probe-ms", type=int, default=500)
    args = parser.parse_args(argv)

    pg = server_url()
    reason = recreate_database(pg)
    if reason is not None:
        log(f"bench.relay skipped: {reason}")
        print(json.dumps({"bench": "relay", "skipped": reason}))
        return 0

    emulator_port, site_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(pg, DATABASE),
        "AI_GATEWAY_BASE_URL": f"http://127.0.0.1:{emulator_port}/v4/ai",
        "AI_GATEWAY_API_KEY": API_KEY,
        "GATEWAY_REALTIME_RATE": "100000/min",
        "GATEWAY_REALTIME_QUOTA": "100000",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("REDIS_URL", "RELAY_REDIS_URL", "DEMO_RELAY"):
        env.pop(name, None)
    logs = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        emulator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway_realtime.emulator",
                "--port",
                str(emulator_port),
                "--api-key",
                API_KEY,
                "--allow-api-key-ws",
            ],
            cwd=ROOT,
            stdout=(logs / "emulator.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(emulator)
        log(f"preparing {args.sessions} users and their sessions")
        keys = json.loads(
            subprocess.run(
                [sys.executable, "-c", SETUP.format(count=args.sessions + 1)],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            ).stdout
        )
        # BENCH_RELAY_PROFILE=<file>: the server under cProfile (its event loop's thread).
        profile = os.environ.get("BENCH_RELAY_PROFILE")
        profiler = ["-m", "cProfile", "-o", profile] if profile else []
        site = subprocess.Popen(
            [
                sys.executable,
                *profiler,
                "-m",
                "uvicorn",
                "example_project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(site_port),
                "--lifespan",
                "off",
                "--no-access-log",
                "--log-level",
                "warning",
                # BENCH_RELAY_WS: uvicorn's WebSocket implementation (--ws).
                "--ws",
                os.environ.get("BENCH_RELAY_WS", "auto"),
            ],
            cwd=ROOT,
            env=env,
            stdout=(logs / "uvicorn.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(site)
        floor_port = free_port()
        floor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.relay_floor",
                "--port",
                str(floor_port),
                "--upstream",
                f"ws://127.0.0.1:{emulator_port}/v4/ai/realtime-model?ai-model-id={MODEL}",
                "--api-key",
                API_KEY,
            ],
            cwd=ROOT,
            stdout=(logs / "floor.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        procs.append(floor)
        wait_for_port(emulator_port, emulator)
        wait_for_port(site_port, site)
        wait_for_port(floor_port, floor)
        servers = Servers(site_port, site.pid, floor_port, floor.pid, emulator_port, emulator.pid)
        result = asyncio.run(run(args, keys, servers))
        result["rows"] = relay_rows(pg)
    finally:
        for proc in reversed(procs):
            # SIGINT: uvicorn stops as on Ctrl-C, and under cProfile the
            # KeyboardInterrupt it re-raises still lets the profile be written.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_database(pg)
    print_table(result)
    print(json.dumps(result))
    return 0


def print_table(result: dict[str, Any]) -> None:
    """Relay and floor side by side, with the load average they were measured under."""
    relay, floor = result["relay"], result["floor"]
    rows = [
        ("added p50 per frame (ms)", "added_p50_ms", "<= 1"),
        ("added p99 per frame (ms)", "added_p99_ms", "<= 5"),
        ("server CPU per frame (us)", "cpu_us_per_frame", "<= 1.5x floor"),
        ("RSS per session under audio (KB)", "rss_per_session_load_kb", ""),
    ]
    load, direct = result["load_average"], result["direct"]
    print(
        f"bench.relay: {result['sessions']} sessions, {result['seconds']} s, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {result['cpus']} cores; "
        f"direct p50 {direct['p50_ms']} ms, p99 {direct['p99_ms']} ms"
    )
    print(f"| {'':34} | {'relay':>9} | {'floor':>9} | target |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 11}|--------|")
    for label, key, target in rows:
        print(f"| {label:34} | {relay.get(key)!s:>9} | {floor.get(key)!s:>9} | {target} |")
    print(f"CPU per frame, relay / floor: {result['cpu_ratio']}")


@dataclasses.dataclass(frozen=True)
class Servers:
    site_port: int
    site_pid: int
    floor_port: int
    floor_pid: int
    emulator_port: int
    emulator_pid: int


async def run(args: argparse.Namespace, keys: list[str], servers: Servers) -> dict[str, Any]:
    origin = f"http://127.0.0.1:{servers.site_port}"
    relay_url = f"ws://127.0.0.1:{servers.site_port}{RELAY_PATH}"
    floor_url = f"ws://127.0.0.1:{servers.floor_port}/"
    direct_url = f"ws://127.0.0.1:{servers.emulator_port}/v4/ai/realtime-model?ai-model-id={MODEL}"

    def relayed(key: str) -> Client:
        return Client(
            {"origin": origin, "additional_headers": {"Cookie": f"sessionid={key}"}}, relay_url
        )

    async def warm_up(client: Client, pid: int, name: str) -> int:
        # One session comes and goes (imports, connections), then the base RSS.
        await client.open()
        await client.probe()
        await client.close()
        await asyncio.sleep(2)
        rss = rss_bytes(pid)
        log(f"{name} RSS after one warm-up session: {rss / 2**20:.1f} MB")
        return rss

    warm_rss = await warm_up(relayed(keys[-1]), servers.site_pid, "uvicorn")
    floor_warm_rss = await warm_up(Client({}, floor_url), servers.floor_pid, "floor")

    n = args.sessions
    direct = await phase(
        "direct",
        [Client({"additional_headers": gateway_headers(API_KEY)}, direct_url) for _ in range(n)],
        args,
        None,
        None,
        servers.emulator_pid,
    )
    await asyncio.sleep(2)
    relay = await phase(
        "relay",
        [relayed(key) for key in keys[:n]],
        args,
        servers.site_pid,
        warm_rss,
        servers.emulator_pid,
    )
    await asyncio.sleep(2)  # the relay completes its rows
    floor = await phase(
        "floor",
        [Client({}, floor_url) for _ in range(n)],
        args,
        servers.floor_pid,
        floor_warm_rss,
        servers.emulator_pid,
    )
    frame_bytes = 2 * PCM_RATE * args.frame_ms // 1000

    for measured in (relay, floor):  # what each adds to a frame's round trip, both ways
        for key in ("p50_ms", "p99_ms"):
            both = measured[key] is not None and direct[key] is not None
            measured[f"added_{key}"] = round(measured[key] - direct[key], 2) if both else None
    relay_cpu, floor_cpu = relay.get("cpu_us_per_frame"), floor.get("cpu_us_per_frame")
    return {
        "bench": "relay",
        "sessions": n,
        "seconds": args.seconds,
        "frame_ms": args.frame_ms,
        "probe_ms": args.probe_ms,
        "frame_pcm_bytes": frame_bytes,
        "frame_json_bytes": len(
            json.dumps({"type": "input-audio-append", "audio": "x" * (4 * -(-frame_bytes // 3))})
        ),
        "cpus": os.cpu_count(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "warm_rss_mb": round(warm_rss / 2**20, 1),
        "direct": direct,
        "relay": relay,
        "floor": floor,
        "cpu_ratio": round(relay_cpu / floor_cpu, 2) if relay_cpu and floor_cpu else None,
    }


if __name__ == "__main__":
    sys.exit(main())
