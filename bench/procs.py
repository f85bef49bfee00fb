"""The bench's processes (all on 127.0.0.1), their accounting (Linux /proc) and its databases."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.stats import load_average

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench"
API_KEY = "emulator-key"
PG_URL = "postgres://postgres@127.0.0.1:5432/gateway_realtime_bench"


def log(message: str) -> None:
    """Progress on stderr, with the load average it was measured under."""
    load = " ".join(f"{value:.2f}" for value in load_average())
    print(f"[bench] {message} (load average {load})", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, from the kernel's accounting."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Server:
    """A child process listening on a loopback port, its output in .bench/<name>.log."""

    def __init__(self, name: str, args: list[str], port: int, env: dict[str, str]) -> None:
        CACHE.mkdir(exist_ok=True)
        with (CACHE / f"{name}.log").open("wb") as output:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=output
            )
        self.port, self.pid = port, self.process.pid
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.process.returncode}: see its log")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not listen on {port} within 60 s") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def python(name: str, module: str, *args: str, env: dict[str, str] | None = None) -> Server:
    """``python -m module args`` on a free port, given as ``{port}`` in ``args``."""
    port = free_port()
    argv = [sys.executable, "-m", module, *(a.format(port=port) for a in args)]
    return Server(name, argv, port, env or dict(os.environ))


def emulator(mint_delay: float = 0.0, *extra: str) -> Server:
    """The package's Gateway emulator in a process of its own."""
    return python(
        "emulator", "gateway_realtime.emulator", "--port", "{port}", "--api-key", API_KEY,
        "--mint-delay", str(mint_delay), *extra,
    )  # fmt: skip


def database_url(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def recreate_database(url: str) -> str | None:
    """A fresh, empty database at ``url``; the reason when PostgreSQL cannot give one."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (the bench dependency group)"
    name = urlsplit(url).path.lstrip("/")
    try:
        with psycopg.connect(
            database_url(url, "postgres"), autocommit=True, connect_timeout=3
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        return f"no PostgreSQL at {urlsplit(url).netloc}: {exc}".strip()
    return None


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(database_url(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def gunicorn(env: dict[str, str], workers: int = 4, threads: int = 8) -> Server:
    """The bench site as docs/deployment.md recommends for 2 cores: 4 gthread workers x 8."""
    return python(
        "gunicorn", "gunicorn", "django.core.wsgi:get_wsgi_application()",
        "--bind", "127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
        "--worker-class", "gthread", "--keep-alive", "30", "--log-level", "warning",
        env=env,
    )  # fmt: skip
