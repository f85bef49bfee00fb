"""The relay: what relay mode (docs/relay.md) adds per frame and per session.

The same clients run three times against the Gateway emulator
(``--allow-api-key-ws``): **direct**, each opening the emulator's realtime
socket itself with the header authentication the relay uses upstream;
**relay**, each opening ``/ws/gateway-realtime/realtime/`` on one uvicorn
process serving ``example_project.asgi`` (``DJANGO_DEBUG=0``, the in-memory
channel layer, PostgreSQL) as a logged-in user of its own; **floor**, each
opening ``bench.relay_floor``, a bare ``websockets`` proxy with a pipe each way
and nothing else. Every client sends 100 ms of 24 kHz PCM16 silence every
100 ms (one-way, as a listening microphone's) and every 500 ms a probe,
``session-update`` timed until ``session-updated`` comes back. Added: a
probe's round trip minus direct's. CPU per frame: the server's user + system
time over the frames through it. RSS per session: the largest RSS sampled
during the audio, less the RSS after one warm-up session, over the sessions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import subprocess
import sys
import time
from importlib.util import find_spec
from typing import Any

from bench.procs import (
    PG_URL,
    ROOT,
    cpu_seconds,
    database_url,
    drop_database,
    emulator,
    log,
    python,
    recreate_database,
    rss_bytes,
)
from bench.relay_floor import MAX_FRAME, gateway_headers
from bench.stats import load_average, percentile

API_KEY = "emulator-key"
MODEL = "openai/gpt-realtime-2"
FRAME_MS, PROBE_MS = 100, 500
FRAME = json.dumps(
    {"type": "input-audio-append", "audio": base64.b64encode(bytes(48 * FRAME_MS)).decode()}
)
PROBE = json.dumps({"type": "session-update", "config": {"instructions": "p"}})

SETUP = """
import json, django
django.setup()
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
users = get_user_model().objects.bulk_create(
    get_user_model()(username=f"relay{{n}}", password="!") for n in range({count})
)
keys = []
for user in get_user_model().objects.filter(username__startswith="relay").order_by("pk"):
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    keys.append(session.session_key)
print(json.dumps(keys))
"""


class Client:
    """One realtime socket: audio frames one way, timed probes both ways."""

    def __init__(self, url: str, **connect: Any) -> None:
        self.url, self.connect = url, connect
        self.rtts: list[float] = []
        self.frames = 0
        self.error: str | None = None
        self.ws: Any = None
        self.answered: asyncio.Future[float] | None = None
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(
            self.url, compression=None, max_size=MAX_FRAME, open_timeout=30, **self.connect
        )
        self.reader = asyncio.create_task(self.read())
        await self.probe(timeout=30, record=False)  # the session is up

    async def read(self) -> None:
        try:
            async for message in self.ws:
                answered = self.answered
                if '"session-updated"' in message[:64] and answered and not answered.done():
                    answered.set_result(time.perf_counter())
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    async def probe(self, timeout: float = 10, record: bool = True) -> None:
        self.answered = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self.ws.send(PROBE)
        ended = await asyncio.wait_for(self.answered, timeout)
        if record:
            self.rtts.append((ended - started) * 1000)

    async def run(self, seconds: float) -> None:
        """Frames every FRAME_MS and probes every PROBE_MS, from a random phase."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, FRAME_MS / 1000))
        next_frame = start = loop.time()
        next_probe = start + random.uniform(0, PROBE_MS / 1000)
        try:
            while (now := loop.time()) < start + seconds:
                if now >= next_probe:
                    await self.probe()
                    next_probe += PROBE_MS / 1000
                elif now >= next_frame:
                    await self.ws.send(FRAME)
                    self.frames += 1
                    next_frame += FRAME_MS / 1000
                else:
                    await asyncio.sleep(min(next_frame, next_probe, start + seconds) - now)
        except Exception as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def warm_rss(client: Client, pid: int) -> int:
    """The server's RSS after one session has come and gone (imports, connections)."""
    await client.open()
    await client.close()
    await asyncio.sleep(2)
    return rss_bytes(pid)


async def phase(
    name: str, clients: list[Client], seconds: float, pid: int | None = None, base_rss: int = 0
) -> dict[str, Any]:
    gate = asyncio.Semaphore(20)  # connects in flight at once

    async def open_one(client: Client) -> None:
        async with gate:
            try:
                await client.open()
            except Exception as exc:
                client.error = f"open: {type(exc).__name__}: {exc}"

    await asyncio.gather(*(open_one(c) for c in clients))
    live = [c for c in clients if c.error is None]
    samples: list[int] = []

    async def sample() -> None:
        while pid is not None:
            await asyncio.sleep(1)
            samples.append(rss_bytes(pid))

    cpu_before = cpu_seconds(pid) if pid else 0.0
    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(c.run(seconds) for c in live))
    sampler.cancel()
    result: dict[str, Any] = {}
    rtts = [rtt for c in clients for rtt in c.rtts]
    if pid is not None:
        through = sum(c.frames for c in live) + 2 * len(rtts)  # a probe crosses twice
        result["cpu_us_per_frame"] = round((cpu_seconds(pid) - cpu_before) * 1e6 / through, 1)
        samples.append(rss_bytes(pid))
        result["rss_kb_per_session"] = round((max(samples) - base_rss) / len(live) / 1024, 1)
    await asyncio.gather(*(c.close() for c in clients))
    result.update(
        sessions=len(live),
        frames=sum(c.frames for c in clients),
        p50_ms=round(percentile(rtts, 50), 2),
        p99_ms=round(percentile(rtts, 99), 2),
        errors=sorted({c.error for c in clients if c.error})[:5],
        load_average=load_average(),
    )
    log(f"relay, {name}: {len(live)} sessions, p50 {result['p50_ms']}, p99 {result['p99_ms']} ms")
    return result


async def measure(
    sessions: int, seconds: float, keys: list[str], ports: dict[str, int], pids: dict[str, int]
) -> dict[str, Any]:
    site = f"127.0.0.1:{ports['site']}"
    gateway = f"ws://127.0.0.1:{ports['gateway']}/v4/ai/realtime-model?ai-model-id={MODEL}"
    floor = f"ws://127.0.0.1:{ports['floor']}/"

    def relayed(key: str) -> Client:
        cookie = {"Cookie": f"sessionid={key}"}
        url = f"ws://{site}/ws/gateway-realtime/realtime/"
        return Client(url, origin=f"http://{site}", additional_headers=cookie)

    site_rss = await warm_rss(relayed(keys[-1]), pids["site"])
    floor_rss = await warm_rss(Client(floor), pids["floor"])
    headers = gateway_headers(API_KEY)
    direct = await phase(
        "direct", [Client(gateway, additional_headers=headers) for _ in range(sessions)], seconds
    )
    relay = await phase(
        "relay", [relayed(key) for key in keys[:sessions]], seconds, pids["site"], site_rss
    )
    bare = await phase(
        "floor", [Client(floor) for _ in range(sessions)], seconds, pids["floor"], floor_rss
    )
    for measured in (relay, bare):
        for key in ("p50_ms", "p99_ms"):
            measured[f"added_{key}"] = round(measured[key] - direct[key], 2)
    return {"direct": direct, "relay": relay, "floor": bare}


def bench(sessions: int, seconds: float) -> dict[str, Any]:
    """Direct, relay and floor with ``sessions`` clients for ``seconds`` each."""
    missing = [name for name in ("channels", "uvicorn", "websockets") if not find_spec(name)]
    url = database_url(os.environ.get("BENCH_DATABASE_URL", PG_URL), "gateway_realtime_bench_relay")
    reason = f"{', '.join(missing)} not installed" if missing else recreate_database(url)
    if reason:
        log(f"relay skipped: {reason}")
        return {"skipped": reason}
    servers = [gateway := emulator(0.0, "--allow-api-key-ws")]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AI_GATEWAY_", "DJANGO_"))},
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": url,
        "AI_GATEWAY_BASE_URL": f"http://127.0.0.1:{gateway.port}/v4/ai",
        "AI_GATEWAY_API_KEY": API_KEY,
        "GATEWAY_REALTIME_RATE": "100000/min",
        "GATEWAY_REALTIME_QUOTA": "100000",
    }
    for name in ("REDIS_URL", "RELAY_REDIS_URL", "DEMO_RELAY"):
        env.pop(name, None)
    try:
        setup = [sys.executable, "-c", SETUP.format(count=sessions + 1)]
        done = subprocess.run(setup, cwd=ROOT, env=env, check=True, capture_output=True)
        keys = json.loads(done.stdout)
        site = python(
            "uvicorn", "uvicorn", "example_project.asgi:application", "--port", "{port}",
            "--lifespan", "off", "--no-access-log", "--log-level", "warning", env=env,
        )  # fmt: skip
        servers.append(site)
        upstream = f"ws://127.0.0.1:{gateway.port}/v4/ai/realtime-model?ai-model-id={MODEL}"
        floor = python(
            "floor", "bench.relay_floor", "--port", "{port}", "--upstream", upstream,
            "--api-key", API_KEY,
        )  # fmt: skip
        servers.append(floor)
        ports = {"gateway": gateway.port, "site": site.port, "floor": floor.port}
        pids = {"site": site.pid, "floor": floor.pid}
        result = asyncio.run(measure(sessions, seconds, keys, ports, pids))
    finally:
        for server in reversed(servers):
            server.stop()
        drop_database(url)
    relay, floor_ = result["relay"], result["floor"]
    result["cpu_ratio"] = round(relay["cpu_us_per_frame"] / floor_["cpu_us_per_frame"], 2)
    print(f"Relay mode, {sessions} sessions for {seconds:g} s (direct p50 "
          f"{result['direct']['p50_ms']} ms, p99 {result['direct']['p99_ms']} ms):")  # fmt: skip
    print(f"  {'':28}{'relay':>8}{'floor':>8}  load")
    for label, key in (
        ("added p50 per frame, ms", "added_p50_ms"),
        ("added p99 per frame, ms", "added_p99_ms"),
        ("server CPU per frame, us", "cpu_us_per_frame"),
        ("RSS per session, KB", "rss_kb_per_session"),
    ):
        print(f"  {label:28}{relay[key]:>8}{floor_[key]:>8}  "
              f"{relay['load_average'][0]:.2f} / {floor_['load_average'][0]:.2f}")  # fmt: skip
    return result
