"""Helpers for the ``fewshot serve`` tests: image bytes, a real server process, a PostgreSQL server."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
SERVE_COMMAND = [sys.executable, "-m", "fewshot", "serve"]


def image_bytes(seed: int, size: int = 48, fmt: str = "PNG", noise: float = 0.0, base: int | None = None) -> bytes:
    """A random-pattern image (class ``base`` pattern plus ``noise``) encoded as ``fmt``."""
    pattern = np.random.default_rng(seed if base is None else base).random((8, 8, 3))
    if noise:
        pattern = np.clip(pattern + noise * np.random.default_rng(seed + 1000).standard_normal(pattern.shape), 0, 1)
    img = Image.fromarray((pattern * 255).astype(np.uint8)).resize((size, size), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels but carries almost no data (a bomb stand-in)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``fewshot serve`` in a child process on a free loopback port (model-free embedders)."""

    def __init__(self, db: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        cmd = [*SERVE_COMMAND, "--db", str(db), "--port", str(self.port),
               "--backbone", "pixels", "--encoder", "hashing", "--threads", "1", "--log-level", "warning", *args]
        self.log = Path(db).with_name(f"server-{self.port}.log")  # a file, not a pipe: a full pipe would block the server
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)

    def wait_ready(self, timeout: float = 60) -> "ServerProcess":
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in time")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def postgres_bin() -> Path | None:
    """The folder of Debian's PostgreSQL server programs (initdb, pg_ctl), if installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


class PostgresServer:
    """A throwaway PostgreSQL cluster in ``root`` on a free loopback port (trust auth, user postgres).

    As root, initdb and the server run as the ``postgres`` system user (PostgreSQL refuses root).
    Raises RuntimeError with the reason when none can be started.
    """

    def __init__(self, root: Path):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server programs not found (apt-get install postgresql)")
        self.root = root
        self.data = root / "pgdata"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root without runuser: cannot start PostgreSQL as another user")
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and no 'postgres' user exists") from None
            root.chmod(0o755)
            os.chown(root, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        opts = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(root / "log"), "-o", opts, "-w", "-t", "30", "start"])
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, cmd: list[str]) -> None:
        r = subprocess.run(self.as_user + cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if r.returncode != 0:
            log = (self.root / "log").read_text()[-1500:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {r.stderr[-1500:]} {log}")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60, cwd=self.root)
