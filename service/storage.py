"""Blob store: a local directory, content-addressed by sha256, writes atomic (temporary file, then rename)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK = 1 << 20
DIGEST = re.compile(r"[0-9a-f]{64}")


class TooLarge(Exception):
    pass


class BlobStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.staging = self.root / "tmp"  # uploads and outputs on their way in, renamed into place by commit()
        self.staging.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        if not DIGEST.fullmatch(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def blobs(self) -> Iterator[tuple[str, Path]]:
        """(sha256, path) of every stored blob; anything else in the store (a placeholder NFS leaves for a file still
        open elsewhere, say) is not listed."""
        for path in sorted(self.root.glob("[0-9a-f][0-9a-f]/*")):
            if DIGEST.fullmatch(path.name) and path.parent.name == path.name[:2]:
                yield path.name, path

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).exists()

    def temporary(self) -> tuple[int, Path]:
        descriptor, name = tempfile.mkstemp(dir=self.staging)
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
