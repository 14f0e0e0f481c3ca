"""The servers and workers the platform starts: a free loopback port for one, their state
folders (owner-only), and stopping them by pid (each in its own session)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

PRIVATE_DIR = 0o700


def private_dir(path: str | Path) -> Path:
    """`path` as a folder, made with its parents if missing; one this call makes is for its
    owner only (0700). An existing folder keeps the mode its owner gave it (a registry root a
    team shares), and no parent's mode is touched."""
    folder = Path(path)
    if not folder.is_dir():
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:  # made meanwhile by another process: theirs to set
            return folder
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is masked by the umask
    return folder


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now at `host` (the server binds it next)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def stop_process_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM a process group, then SIGKILL what is left after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            _reap(pid)
            time.sleep(0.2)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
