"""Where data files live, and checksum-verified downloads (only when asked)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "FEWSHOT_DATA"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fewshot`` (default ``~/.cache/fewshot``): downloads and decode caches."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fewshot"


def search_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for data, in order: the argument, ``$FEWSHOT_DATA``, the cache dir."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get(ENV_VAR):
        dirs.append(Path(os.environ[ENV_VAR]))
    dirs.append(cache_dir() / "data")
    return dirs


@dataclass(frozen=True)
class RemoteFile:
    """An official archive: its file name, URL, MD5 (None when the publisher gives none) and sub-folder."""

    name: str
    url: str
    md5: str | None
    subdir: str


def find_file(remote: RemoteFile, data_dir: str | Path | None = None, extracted: str | None = None) -> Path | None:
    """The first existing ``<dir>[/<subdir>]/<name>`` (or its extracted folder ``extracted``)."""
    for d in search_dirs(data_dir):
        for base in (d, d / remote.subdir):
            for cand in ([base / extracted] if extracted else []) + [base / remote.name]:
                if cand.exists():
                    return cand
    return None


def file_digest(path: Path, algorithm: str = "md5", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks (``algorithm``: any :func:`hashlib.new` name)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def missing_data_error(remote: RemoteFile, data_dir: str | Path | None, what: str) -> FileNotFoundError:
    tried = ", ".join(str(d) for d in search_dirs(data_dir))
    return FileNotFoundError(
        f"{what}: {remote.name} was not found (looked in {tried}, and their '{remote.subdir}/' sub-folders).\n"
        f"Get it from {remote.url} and put it in one of those folders (or point --data-dir / ${ENV_VAR} at "
        f"its folder), or run `fewshot data fetch {remote.subdir}` / pass download=True when online."
    )


def download(remote: RemoteFile, dest_dir: Path | None = None) -> Path:
    """Download ``remote`` into ``dest_dir`` (default: the cache), verifying its MD5 when known."""
    dest_dir = Path(dest_dir) if dest_dir else cache_dir() / "data" / remote.subdir
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.name
    if dest.exists() and (remote.md5 is None or file_digest(dest) == remote.md5):
        return dest
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=60) as resp:
            shutil.copyfileobj(resp, out)
        got = file_digest(Path(tmp_name))
        if remote.md5 is not None and got != remote.md5:
            raise OSError(f"checksum mismatch for {remote.url}: MD5 {got}, expected {remote.md5}; the download is corrupt, try again")
        os.replace(tmp_name, dest)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(exc, urllib.error.URLError):
            raise OSError(f"could not download {remote.url} ({exc.reason}); are you offline? Put {remote.name} in {dest_dir} by hand") from exc
        raise
    return dest
