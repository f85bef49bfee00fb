"""Starting, stopping and accounting for the bench's server processes (Linux /proc)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listened on port {port} within {timeout:g} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far, from its own kernel accounting."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return 0.0
    # Fields after the command name, which may itself hold spaces or parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def pids_named(names: Iterable[str]) -> dict[str, list[int]]:
    """Running processes by command name (``/proc/<pid>/comm``), e.g. ``postgres``."""
    wanted = set(names)
    found: dict[str, list[int]] = {name: [] for name in wanted}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm in wanted:
            found[comm].append(int(entry.name))
    return found


class CpuMeter:
    """CPU used by a set of processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = list(pids)
        self._before: dict[int, float] = {}
        self.seconds: float | None = None

    def start(self) -> None:
        self._before = {pid: cpu_seconds(pid) for pid in self.pids}

    def stop(self) -> None:
        self.seconds = sum(cpu_seconds(pid) - self._before.get(pid, 0.0) for pid in self.pids)


class GroupCpuMeter:
    """CPU of groups of processes the bench does not own, such as PostgreSQL's backends.

    ``groups()`` is asked at ``start()`` and again at ``stop()``: a process
    that appeared in between (a backend for a server thread's first
    connection) counts whole, one that exited in between is left out.
    """

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}

    def start(self) -> None:
        self._before = {
            kind: {pid: cpu_seconds(pid) for pid in pids} for kind, pids in self.groups().items()
        }

    def stop(self) -> None:
        now = self.groups()
        self.seconds = {}
        for kind in self._before.keys() | now.keys():
            before = self._before.get(kind, {})
            pids = set(before) | set(now.get(kind, []))
            self.seconds[kind] = sum(
                max(0.0, cpu_seconds(pid) - before.get(pid, 0.0)) for pid in pids
            )


class Server:
    """A child process serving HTTP on a loopback port; stopped with SIGTERM."""

    def __init__(self, name: str, args: list[str], port: int, env: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        wait_for_port(port, self.process)

    def pids(self) -> list[int]:
        """The process and its children (gunicorn's workers)."""
        return [self.process.pid, *children(self.process.pid)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def gunicorn(workers: int, threads: int, env: dict[str, str]) -> Server:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "bench.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--keep-alive",
        "30",
        "--log-level",
        "warning",
    ]
    server = Server(f"gunicorn {workers}x{threads}", args, port, env)
    # The port opens before every worker has imported Django; wait for all.
    deadline = time.monotonic() + 60
    while len(children(server.process.pid)) < workers and time.monotonic() < deadline:
        time.sleep(0.1)
    return server
