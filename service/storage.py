"""Blob store: a local directory, content-addressed by sha256, writes atomic (temporary file, then rename)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20


class TooLarge(Exception):
    pass


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def temporary(self) -> tuple[int, Path]:
        descriptor, name = tempfile.mkstemp(dir=self.root / "tmp")
        return descriptor, Path(name)

    def commit(self, temporary: Path, sha256: str) -> Path:
        final = self.path(sha256)
        final.parent.mkdir(exist_ok=True)
        if final.exists():  # same content already stored
            temporary.unlink()
        else:
            os.replace(temporary, final)
        return final

    def stage_chunks(self, chunks: Iterable[bytes], *, limit: int | None = None) -> tuple[Path, str, int]:
        """Stream chunks into a temporary file of the store: (its path, sha256, size), for :meth:`commit` to place.

        Raises TooLarge (and leaves nothing behind) past ``limit`` bytes.
        """
        digest, size = hashlib.sha256(), 0
        descriptor, temporary = self.temporary()
        try:
            with os.fdopen(descriptor, "wb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if limit is not None and size > limit:
                        raise TooLarge(size)
                    digest.update(chunk)
                    handle.write(chunk)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary, digest.hexdigest(), size

    def stage_file(self, source: str | Path) -> tuple[Path, str, int]:
        with open(source, "rb") as handle:
            return self.stage_chunks(iter(lambda: handle.read(CHUNK), b""))

    def put_chunks(self, chunks: Iterable[bytes], *, limit: int | None = None) -> tuple[str, int]:
        """Stage and commit at once. The service commits under its blob lock instead (service.files.lock_blob)."""
        temporary, sha, size = self.stage_chunks(chunks, limit=limit)
        self.commit(temporary, sha)
        return sha, size

    def copy_to(self, sha256: str, destination: str | Path) -> Path:
        shutil.copyfile(self.path(sha256), destination)
        return Path(destination)

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
