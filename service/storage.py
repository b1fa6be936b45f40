"""Blob stores, content-addressed by sha256: a local directory (the embedded default; writes atomic: temporary file,
then rename) or an S3-compatible bucket (:class:`S3BlobStore`, chosen by ``SPARSEQ_BLOB_URL=s3://bucket/prefix``).

Both stage incoming bytes in a local temporary file (``staging``) and place them with :meth:`commit`; readers either
copy a blob to a local file (:meth:`copy_to`, what a worker does into its own scratch directory) or stream it
(:meth:`open_range`). No machine needs to share a file system with another when the blobs are in S3.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

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

    def blobs(self) -> Iterator[tuple[str, int]]:
        """(sha256, size) of every stored blob; anything else in the store (a placeholder NFS leaves for a file still
        open elsewhere, say) is not listed, nor a blob removed while listing."""
        for path in sorted(self.root.glob("[0-9a-f][0-9a-f]/*")):
            if DIGEST.fullmatch(path.name) and path.parent.name == path.name[:2]:
                try:
                    yield path.name, path.stat().st_size
                except FileNotFoundError:
                    continue

    def size(self, sha256: str) -> int | None:
        """The blob's size, None when it is not stored."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The blob's bytes ``start..end`` (end exclusive; None: to the end) in chunks."""
        with open(self.path(sha256), "rb") as handle:
            handle.seek(start)
            left = None if end is None else end - start
            while left is None or left > 0:
                chunk = handle.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def read_bytes(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

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


class S3BlobStore(BlobStore):
    """Blobs as objects ``<prefix><sha[:2]>/<sha>`` of an S3-compatible bucket (AWS S3, MinIO, ...), through boto3.

    Uploads go through boto3's transfer manager: multipart above ``multipart_threshold`` bytes, in parts of
    ``multipart_chunksize``. Staging stays local (``staging_dir``): an upload is hashed and validated as it arrives,
    then placed. Reads are streamed GETs, a byte range as S3's own Range GET.
    """

    def __init__(
        self,
        url: str,
        *,
        staging_dir: str | Path,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold: int = 64 << 20,
        multipart_chunksize: int = 16 << 20,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        parsed = urlsplit(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"a blob URL is s3://bucket[/prefix], got {url!r}")
        self.url, self.bucket = url, parsed.netloc
        prefix = parsed.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.root = None  # no local directory holds the blobs
        self.staging = Path(staging_dir)
        self.staging.mkdir(parents=True, exist_ok=True)
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize, use_threads=True
        )

    def key(self, sha256: str) -> str:
        if not DIGEST.fullmatch(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return f"{self.prefix}{sha256[:2]}/{sha256}"

    def path(self, sha256: str) -> Path:
        raise TypeError("an S3 blob has no local path: use copy_to, open_range or read_bytes")

    def blobs(self) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                parent, _, name = item["Key"][len(self.prefix) :].rpartition("/")
                if DIGEST.fullmatch(name) and parent == name[:2]:
                    yield name, item["Size"]

    def size(self, sha256: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))["ContentLength"]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        return self.size(sha256) is not None

    def commit(self, temporary: Path, sha256: str) -> str:
        """Upload the staged file (multipart past the threshold) unless the same content is stored; the staged file
        goes either way. Returns the object's key."""
        key = self.key(sha256)
        try:
            if not self.exists(sha256):
                self.client.upload_file(str(temporary), self.bucket, key, Config=self.transfer)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return key

    def copy_to(self, sha256: str, destination: str | Path) -> Path:
        self.client.download_file(self.bucket, self.key(sha256), str(destination), Config=self.transfer)
        return Path(destination)

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        arguments = {"Bucket": self.bucket, "Key": self.key(sha256)}
        if start or end is not None:
            arguments["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        body = self.client.get_object(**arguments)["Body"]
        try:
            yield from body.iter_chunks(CHUNK)
        finally:
            body.close()

    def read_bytes(self, sha256: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))["Body"].read()

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    def abort_stale_uploads(self, older_than_s: float) -> list[str]:
        """Abort multipart uploads started more than ``older_than_s`` ago (a process killed mid-upload leaves its
        parts billed and invisible); returns their keys."""
        import datetime as dt

        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
        aborted = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted.append(upload["Key"])
        return aborted


def open_store(settings) -> BlobStore:
    """The blob store the settings name: S3 for ``blob_url = s3://...``, else the local directory."""
    if settings.blob_url:
        secret = settings.s3_secret_access_key
        return S3BlobStore(
            settings.blob_url,
            staging_dir=settings.resolved_staging_dir,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            multipart_threshold=settings.s3_multipart_threshold_bytes,
            multipart_chunksize=settings.s3_multipart_chunk_bytes,
        )
    return BlobStore(settings.resolved_blob_dir)
