"""The sparseq Python SDK: the HTTP API as methods. It needs httpx only (no torch, nothing else of sparseq).

    from client import Client

    sparseq = Client()  # SPARSEQ_API_KEY and SPARSEQ_URL (default http://127.0.0.1:8000) from the environment
    train = sparseq.upload_file("ptb.train.txt", purpose="lm_text")
    job = sparseq.create_job(recipe, files={"train": train["id"]})
    job = sparseq.wait(job["id"], on_update=lambda j: print(j["status"], j["progress"]))
    paths = sparseq.download_artifacts(job["id"], "out/")  # each checked against its sha256

Errors from the API raise :class:`SparseqError` with the API's ``code``, ``message`` and ``param``. Reads are retried
on connection errors and on 429/502/503/504; creating a job is retried on connection errors only, with one
``Idempotency-Key`` for all attempts, so a retry never makes a second job. Uploads and downloads are not retried (a
stream cannot be replayed; a download that fails leaves nothing behind). Downloads are checked against their sha256
and never replace an existing file unless asked to.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "cancelled")
RETRY_STATUSES = (429, 502, 503, 504)
CHUNK = 1 << 20

Object = dict[str, Any]


class SparseqError(Exception):
    """An error answered by the API (``status`` its HTTP status), or ``connection_error`` (status 0)."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" (parameter {self.param!r})" if self.param else "")


def _error_of(response: httpx.Response) -> SparseqError:
    try:
        body = response.json()["error"]
        return SparseqError(response.status_code, body["code"], body["message"], body.get("param"))
    except (ValueError, KeyError, TypeError):  # not the API's error shape (a proxy's page, say)
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else response.reason_phrase
        return SparseqError(response.status_code, f"http_{response.status_code}", text)


def _unreachable(url: str, error: httpx.TransportError, path: str | None = None) -> str:
    """A connection error's message: its kind and the OS's reason, never the request (it carries the key)."""
    reason = str(error) if isinstance(error, httpx.NetworkError | httpx.TimeoutException) else ""
    what = f"{path} from {url}" if path else url
    return f"cannot reach {what} ({type(error).__name__}{': ' + reason if reason else ''})"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise SparseqError(response.status_code, "bad_response", f"{response.request.url.path}: not JSON") from None


def safe_name(name: str) -> str:
    """The last component of a server-given file name, on POSIX and on Windows alike; refuses empty, . and ..."""
    last = PureWindowsPath(PurePosixPath(name).name).name
    if last in ("", ".", ".."):
        raise SparseqError(0, "bad_filename", f"the service sent a file name that is not a file: {name!r}")
    return last


def _exists(*paths: Path) -> FileExistsError:
    names = ", ".join(map(str, paths))
    return FileExistsError(f"{names} already there (overwrite=True, or --force on the command line, replaces it)")


def _place(partial: Path, destination: Path, overwrite: bool) -> None:
    """Move a finished download into place; without ``overwrite`` never over an existing file (a hard link fails
    where the name is taken, atomically; where links are not supported, a check just before the rename)."""
    if overwrite:
        os.replace(partial, destination)
        return
    try:
        os.link(partial, destination)
    except FileExistsError:
        raise _exists(destination) from None
    except OSError:  # no hard links on this file system
        if destination.exists():
            raise _exists(destination) from None
        os.replace(partial, destination)


class Client:
    """One API key against one service. Use it as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        api_key = api_key or os.environ.get("SPARSEQ_API_KEY")
        if not api_key:
            raise ValueError("no API key: set SPARSEQ_API_KEY or pass one (sparseqd create-key NAME makes one)")
        if not all("!" <= c <= "~" for c in api_key):  # the key itself is never echoed, not even in an error
            raise ValueError("the API key has whitespace, control or non-ASCII characters (a trailing newline?)")
        self.base_url = (base_url or os.environ.get("SPARSEQ_URL") or DEFAULT_URL).rstrip("/")
        self._shown_url = str(httpx.URL(self.base_url).copy_with(username=None, password=None))
        self.retries, self.backoff = retries, backoff
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, retry_statuses: tuple[int, ...] = (), retries: int | None = None, **kwargs
    ) -> httpx.Response:
        """One call; retried (``self.retries`` times, exponential backoff) on connection errors and ``retry_statuses``.

        Only idempotent calls may pass ``retry_statuses``; a call that must not repeat passes ``retries=0``.
        """
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                if last or isinstance(error, httpx.LocalProtocolError | httpx.UnsupportedProtocol):  # never succeeds
                    raise SparseqError(0, "connection_error", _unreachable(self._shown_url, error)) from None
            else:
                if response.status_code not in retry_statuses or last:
                    if response.is_error:
                        raise _error_of(response)
                    return response
            time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return _json(self._request("GET", path, params=query, retry_statuses=RETRY_STATUSES))

    def _pages(self, path: str, *, page_size: int = 100, **params: Any) -> Iterator[Object]:
        """Every object of a list, newest first, following the ``after`` cursor page by page."""
        after = None
        while True:
            page = self._get(path, after=after, limit=page_size, **params)
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            after = page["data"][-1]["id"]

    def _download(self, path: str, destination: str | Path, describe: str, *, overwrite: bool) -> Path:
        """Stream to a scratch file of its own beside ``destination``, check it against the sha256 the API gives (its
        header, else the object at ``describe``), then move it into place. Without ``overwrite`` the move refuses an
        existing ``destination``, also one that appeared during the download."""
        destination = Path(destination)
        if destination.exists() and not overwrite:
            raise _exists(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
        partial = Path(name)
        digest = hashlib.sha256()
        try:
            with os.fdopen(descriptor, "wb") as handle, self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise _error_of(response)
                expected = response.headers.get("x-content-sha256")
                for chunk in response.iter_bytes(CHUNK):
                    digest.update(chunk)
                    handle.write(chunk)
            if not expected:
                expected = self._get(describe).get("sha256")
                if not expected:
                    raise SparseqError(0, "bad_response", f"{describe}: the service gave no sha256 to check against")
            if digest.hexdigest() != expected:
                raise SparseqError(0, "corrupt_download", f"{path}: sha256 {digest.hexdigest()}, expected {expected}")
            _place(partial, destination, overwrite)
        except httpx.TransportError as error:
            raise SparseqError(0, "connection_error", _unreachable(self._shown_url, error, path)) from None
        finally:
            partial.unlink(missing_ok=True)
        return destination

    # -- files -----------------------------------------------------------------------------------------------------

    def upload_file(self, path: str | Path, purpose: str, *, filename: str | None = None) -> Object:
        """Stream a file from disk: ``lm_text``, ``tagging_conll``, ``trajectories`` (npz) or ``weights``."""
        path = Path(path)
        with open(path, "rb") as handle:
            files = {"file": (filename or path.name, handle, "application/octet-stream")}
            return _json(self._request("POST", "/v1/files", files=files, data={"purpose": purpose}, retries=0))

    def files(self, purpose: str | None = None, *, page_size: int = 100) -> Iterator[Object]:
        return self._pages("/v1/files", page_size=page_size, purpose=purpose)

    def get_file(self, file_id: str) -> Object:
        return self._get(f"/v1/files/{file_id}")

    def download_file(self, file_id: str, destination: str | Path, *, overwrite: bool = False) -> Path:
        path = f"/v1/files/{file_id}"
        return self._download(f"{path}/content", destination, path, overwrite=overwrite)

    def delete_file(self, file_id: str) -> Object:
        return _json(self._request("DELETE", f"/v1/files/{file_id}", retries=0))

    # -- jobs ------------------------------------------------------------------------------------------------------

    def create_job(
        self, recipe: dict[str, Any], files: dict[str, str] | None = None, *, idempotency_key: str | None = None
    ) -> Object:
        """Submit a recipe (its JSON Schema: :meth:`recipe_schema`) with data role -> file id."""
        headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"}
        body = {"recipe": recipe, "files": files or {}}
        return _json(self._request("POST", "/v1/jobs", json=body, headers=headers))

    def get_job(self, job_id: str) -> Object:
        return self._get(f"/v1/jobs/{job_id}")

    def jobs(self, status: str | None = None, *, page_size: int = 100) -> Iterator[Object]:
        return self._pages("/v1/jobs", page_size=page_size, status=status)

    def cancel_job(self, job_id: str) -> Object:
        return _json(self._request("POST", f"/v1/jobs/{job_id}/cancel", retry_statuses=RETRY_STATUSES))

    def events(self, job_id: str, *, page_size: int = 100) -> Iterator[Object]:
        """The job's events, newest first."""
        return self._pages(f"/v1/jobs/{job_id}/events", page_size=page_size)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[Object], None] | None = None,
    ) -> Object:
        """Poll until the job is succeeded, failed or cancelled, and return it (it does not raise for a failed job).

        ``on_update(job)`` is called whenever the status, the progress or the live report (phase, step, loss...)
        changed. Raises TimeoutError after ``timeout`` seconds; the job goes on running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while True:
            job = self.get_job(job_id)
            state = (job["status"], job["progress"], json.dumps(job.get("live"), sort_keys=True))
            if on_update is not None and state != seen:
                on_update(job)
            seen = state
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll_interval if deadline is None else max(0.0, min(poll_interval, deadline - time.monotonic())))

    def artifacts(self, job_id: str) -> list[Object]:
        return self._get(f"/v1/jobs/{job_id}/artifacts")["data"]

    def download_artifact(self, artifact_id: str, destination: str | Path, *, overwrite: bool = False) -> Path:
        path = f"/v1/artifacts/{artifact_id}"
        return self._download(f"{path}/content", destination, path, overwrite=overwrite)

    def download_artifacts(self, job_id: str, directory: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Every artifact of a job into ``directory`` under its own file name, each checked against its sha256."""
        targets = [(a["id"], Path(directory) / safe_name(a["filename"])) for a in self.artifacts(job_id)]
        names = [path.name.casefold() for _, path in targets]  # case-insensitive file systems too
        if len(set(names)) != len(names):  # refused before any download: never half a set, nothing replaced
            raise SparseqError(0, "bad_filename", f"job {job_id} has two artifacts of one name: {sorted(names)}")
        existing = [path for _, path in targets if path.exists()]
        if existing and not overwrite:
            raise _exists(*existing)
        return [self.download_artifact(i, path, overwrite=overwrite) for i, path in targets]

    # -- before any compute ----------------------------------------------------------------------------------------

    def create_sweep(self, sweep: dict[str, Any], *, idempotency_key: str | None = None) -> Object:
        """Submit a sweep: ``{recipe, grid, overrides, files, max_parallel}`` (POST /v1/sweeps)."""
        headers = {"Idempotency-Key": idempotency_key or f"sdk-{uuid.uuid4()}"}
        return _json(self._request("POST", "/v1/sweeps", json=sweep, headers=headers))

    def list_sweeps(self, *, page_size: int = 100) -> Iterator[Object]:
        return self._pages("/v1/sweeps", page_size=page_size)

    def get_sweep(self, sweep_id: str) -> Object:
        return self._get(f"/v1/sweeps/{sweep_id}")

    def cancel_sweep(self, sweep_id: str) -> Object:
        return _json(self._request("POST", f"/v1/sweeps/{sweep_id}/cancel", retry_statuses=RETRY_STATUSES))

    def wait_sweep(self, sweep_id: str, *, timeout: float | None = None, poll_s: float = 2.0) -> Object:
        """Poll until the sweep is no longer running (TimeoutError after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (sweep := self.get_sweep(sweep_id))["status"] == "running":
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} still running after {timeout} s")
            time.sleep(poll_s)
        return sweep

    def download_sweep_artifacts(self, sweep_id: str, directory: str | Path, *, overwrite: bool = False) -> list[Path]:
        """Every child job's artifacts, each under ``directory/<job id>/`` (the service has no sweep-level artifacts
        yet), and the sweep object itself as ``directory/sweep.json``."""
        sweep = self.get_sweep(sweep_id)
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for job_id in sweep["jobs"]:
            paths += self.download_artifacts(job_id, root / job_id, overwrite=overwrite)
        summary = root / "sweep.json"
        if summary.exists() and not overwrite:
            raise _exists(summary)
        summary.write_text(json.dumps(sweep, indent=2))
        return [*paths, summary]

    def estimate(self, recipe: dict[str, Any], *, vocab_size: int | None = None, num_tags: int | None = None) -> Object:
        """Parameters, checkpoint bytes, FLOPs and training memory of a recipe."""
        body = {"recipe": recipe, "vocab_size": vocab_size, "num_tags": num_tags}
        body = {k: v for k, v in body.items() if v is not None}
        return _json(self._request("POST", "/v1/estimate", json=body, retry_statuses=RETRY_STATUSES))

    def tasks(self) -> Object:
        """The tasks a recipe can name (metric, data roles and the purpose each needs) and every upload purpose."""
        return self._get("/v1/tasks")

    def recipe_schema(self) -> Object:
        return self._get("/v1/schemas/recipe")
