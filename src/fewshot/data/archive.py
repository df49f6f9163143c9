"""Read files from a zip archive or an extracted folder through one interface."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path


class FileTree:
    """Relative POSIX paths -> bytes, for a ``.zip`` file or a folder.

    Paths are relative to the archive root (zip) or to the folder itself, so
    ``images_background/Latin/character01/0001_01.png`` reads the same from both.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist")
        self._zip = None
        if self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile as exc:
                raise ValueError(f"{self.path} is not a readable zip archive ({exc}); it is corrupt or truncated: download it again") from exc

    def names(self) -> Iterator[str]:
        """All file (not folder) paths, '/'-separated."""
        if self._zip is not None:
            for info in self._zip.infolist():
                if not info.is_dir() and "__MACOSX" not in info.filename:
                    yield info.filename
        else:
            for p in sorted(self.path.rglob("*")):
                if p.is_file():
                    yield p.relative_to(self.path).as_posix()

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            try:
                return self._zip.read(name)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
                raise ValueError(f"{self.path}: member {name} is corrupt ({exc}); the archive is damaged: download it again") from exc
        return (self.path / name).read_bytes()

    def fingerprint(self) -> str:
        """Cheap identity for caches: path, size and modification time."""
        st = self.path.stat()
        return f"{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> "FileTree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
