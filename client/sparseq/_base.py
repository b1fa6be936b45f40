"""What the synchronous and the asynchronous client share: a call's description, the retry rule, the mapping of
answers to models and errors, the download's verification and the wait's bookkeeping. The two clients only do the
I/O (``httpx.Client`` and ``httpx.AsyncClient``)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import pydantic

from sparseq._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APITimeoutError,
    DownloadError,
    SparseqError,
    retry_after,
    status_error,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 3
CHUNK = 1 << 20
MAX_BACKOFF = 8.0  # seconds: the longest wait between two attempts that the client chooses itself
MAX_RETRY_AFTER = 60.0  # seconds: a longer Retry-After is not waited for (the error is raised instead)

# Statuses after which the same request may succeed: rate limited, and a proxy or the service busy or restarting.
READ_RETRY = frozenset({408, 429, 500, 502, 503, 504})
# A job or sweep creation carries one Idempotency-Key over all its attempts, so a lost answer cannot make a second
# one; a 429 was refused before anything was recorded. A 5xx is not retried: the service has answered for that key.
CREATE_RETRY = frozenset({429})
# An upload's stream cannot be known to have been stored or not when the connection breaks (a retry could store the
# file twice): only a 429 (refused before the body was read) is retried, by opening the file again.
UPLOAD_RETRY = frozenset({429})

M = TypeVar("M", bound=pydantic.BaseModel)


def segment(value: str) -> str:
    """An id as one path segment (``/`` and ``..`` cannot reach another route)."""
    return quote(str(value), safe="")


@dataclass
class Call:
    """One API call: what to send, when it may be sent again, and what the answer is parsed into."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_statuses: frozenset[int] = READ_RETRY
    retry_connection: bool = True  # connection errors: retried unless the request must not be repeated
    open_files: Callable[[], dict[str, Any]] | None = None  # multipart bodies are reopened for every attempt
    data: dict[str, Any] | None = None

    def request(self, files: dict[str, Any] | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        arguments: dict[str, Any] = {"params": params, "headers": self.headers}
        if self.json is not None:
            arguments["json"] = self.json
        if files is not None:
            arguments["files"] = files
        if self.data is not None:
            arguments["data"] = self.data
        return {"method": self.method, "url": self.path, **arguments}


class Attempts:
    """The retry rule of one call: after each failure either the seconds to wait before the next attempt, or the
    error to raise. The wait is the service's ``Retry-After`` when it gives one (up to a minute), else a jittered
    exponential back-off: ``backoff · 2^attempt`` seconds, capped at 8, times a random factor in [0.5, 1]."""

    def __init__(self, call: Call, *, max_retries: int, backoff: float, shown_url: str) -> None:
        self.call, self.max_retries, self.backoff, self.shown_url = call, max_retries, backoff, shown_url
        self.attempt = 0

    def _next(self, error: SparseqError, response: httpx.Response | None) -> float:
        if self.attempt >= self.max_retries:
            raise error
        wait = retry_after(response)
        if wait is None:
            wait = min(MAX_BACKOFF, self.backoff * 2**self.attempt) * random.uniform(0.5, 1.0)
        elif wait > MAX_RETRY_AFTER:
            raise error
        self.attempt += 1
        return wait

    def failed(self, error: httpx.TransportError) -> float:
        """The seconds to wait after a connection error, or raises it as an APIConnectionError/APITimeoutError."""
        failure = connection_error(self.shown_url, error)
        if not self.call.retry_connection or isinstance(error, httpx.LocalProtocolError | httpx.UnsupportedProtocol):
            raise failure from None
        return self._next(failure, None)

    def answered(self, response: httpx.Response) -> float | None:
        """None when the answer is a success; the seconds to wait before another attempt; or raises its error."""
        if response.is_success:
            return None
        error = status_error(response)
        if response.status_code not in self.call.retry_statuses:
            raise error
        return self._next(error, response)


def connection_error(url: str, error: httpx.TransportError, path: str | None = None) -> APIConnectionError:
    """A connection error's message: its kind and the OS's reason, never the request (it carries the key)."""
    reason = str(error) if isinstance(error, httpx.NetworkError | httpx.TimeoutException) else ""
    what = f"{path} from {url}" if path else url
    text = f"cannot reach {what} ({type(error).__name__}{': ' + reason if reason else ''})"
    return APITimeoutError(text) if isinstance(error, httpx.TimeoutException) else APIConnectionError(text)


def parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise APIResponseValidationError(f"{response.request.url.path}: the answer is not JSON") from None


def parse(model: type[M], response: httpx.Response) -> M:
    return validate(model, parse_json(response), response.request.url.path)


def validate(model: type[M], value: Any, where: str) -> M:
    try:
        return model.model_validate(value)
    except pydantic.ValidationError as error:
        first = error.errors()[0]
        place = ".".join(map(str, first["loc"])) or "the object"
        raise APIResponseValidationError(f"{where}: not a {model.__name__} ({place}: {first['msg']})") from None


@dataclass
class Page(Generic[M]):
    data: list[M]
    has_more: bool

    @classmethod
    def parse(cls, model: type[M], response: httpx.Response) -> Page[M]:
        body = parse_json(response)
        where = response.request.url.path
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise APIResponseValidationError(f"{where}: not a list")
        return cls([validate(model, item, where) for item in body["data"]], bool(body.get("has_more")))

    def next_after(self) -> str | None:
        """The cursor of the next page, or None when this was the last."""
        return getattr(self.data[-1], "id", None) if self.has_more and self.data else None


def safe_name(name: str) -> str:
    """The last component of a server-given file name, on POSIX and on Windows alike; refuses empty, . and ..."""
    last = PureWindowsPath(PurePosixPath(name).name).name
    if last in ("", ".", ".."):
        raise DownloadError(f"the service sent a file name that is not a file: {name!r}", code="bad_filename")
    return last


def exists_error(*paths: Path) -> FileExistsError:
    names = ", ".join(map(str, paths))
    return FileExistsError(f"{names} already there (overwrite=True, or --force on the command line, replaces it)")


def plan_downloads(owner: str, artifacts: list[Any], directory: str | Path, overwrite: bool) -> list[tuple[str, Path]]:
    """Where each artifact goes: ``directory/<its file name>``. Refused before any download (never half a set,
    nothing replaced) when two share a name (case-insensitively) or, without ``overwrite``, one is already there."""
    targets = [(a.id, Path(directory) / safe_name(a.filename)) for a in artifacts]
    names = [path.name.casefold() for _, path in targets]
    if len(set(names)) != len(names):
        raise DownloadError(f"{owner} has two artifacts of one name: {sorted(names)}", code="bad_filename")
    existing = [path for _, path in targets if path.exists()]
    if existing and not overwrite:
        raise exists_error(*existing)
    return targets


class Download:
    """A download into a scratch file of its own beside ``destination``, checked against the sha256 the API gives
    (its ``x-content-sha256`` header, else the described object's ``sha256``), then moved into place. Without
    ``overwrite`` the move refuses an existing ``destination``, also one that appeared during the download."""

    def __init__(self, destination: str | Path, *, overwrite: bool) -> None:
        self.destination, self.overwrite = Path(destination), overwrite
        if self.destination.exists() and not overwrite:
            raise exists_error(self.destination)
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.destination.name}."
        descriptor, name = tempfile.mkstemp(dir=self.destination.parent, prefix=prefix, suffix=".part")
        self.partial = Path(name)
        self.handle = os.fdopen(descriptor, "wb")
        self.digest = hashlib.sha256()
        self.expected: str | None = None

    def started(self, response: httpx.Response) -> None:
        self.expected = response.headers.get("x-content-sha256")

    def write(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        self.handle.write(chunk)

    def finish(self, path: str, described: Any = None) -> Path:
        """Verify (``described``: the object fetched when no header came) and move into place."""
        self.handle.close()
        expected = self.expected or (described.get("sha256") if isinstance(described, dict) else None)
        if not expected:
            raise APIResponseValidationError(f"{path}: the service gave no sha256 to check the download against")
        actual = self.digest.hexdigest()
        if actual != expected:
            raise DownloadError(f"{path}: sha256 {actual}, expected {expected}", code="corrupt_download")
        self._place()
        return self.destination

    def _place(self) -> None:
        if self.overwrite:
            os.replace(self.partial, self.destination)
            return
        try:  # a hard link fails where the name is taken, atomically
            os.link(self.partial, self.destination)
        except FileExistsError:
            raise exists_error(self.destination) from None
        except OSError:  # no hard links on this file system: a check just before the rename
            if self.destination.exists():
                raise exists_error(self.destination) from None
            os.replace(self.partial, self.destination)

    def close(self) -> None:
        self.handle.close()
        self.partial.unlink(missing_ok=True)


class Watch:
    """``wait``'s bookkeeping: calls ``on_update`` when the status, the progress or the live report changed, and says
    how long to sleep before the next poll (None: the object is done; TimeoutError after ``timeout`` seconds)."""

    def __init__(self, what: str, timeout: float | None, poll_interval: float, on_update: Callable | None) -> None:
        self.what, self.timeout, self.poll_interval, self.on_update = what, timeout, poll_interval, on_update
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.seen: tuple | None = None

    def observe(self, obj: Any) -> float | None:
        state = (obj.status, json.dumps(obj.model_dump(mode="json", include={"progress", "live"}), sort_keys=True))
        if self.on_update is not None and state != self.seen:
            self.on_update(obj)
        self.seen = state
        if obj.done:
            return None
        if self.deadline is None:
            return self.poll_interval
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self.what} still {obj.status} after {self.timeout} s (it goes on running)")
        return min(self.poll_interval, left)


class Options:
    """The settings a client is made with: key, URL, timeout, retries."""

    def __init__(self, api_key: str | None, base_url: str | None, timeout: float, max_retries: int, backoff: float):
        api_key = api_key or os.environ.get("SPARSEQ_API_KEY")
        if not api_key:
            raise ValueError("no API key: set SPARSEQ_API_KEY or pass one (sparseqd create-key NAME makes one)")
        if not all("!" <= c <= "~" for c in api_key):  # the key itself is never echoed, not even in an error
            raise ValueError("the API key has whitespace, control or non-ASCII characters (a trailing newline?)")
        self.base_url = (base_url or os.environ.get("SPARSEQ_URL") or DEFAULT_URL).rstrip("/")
        self.shown_url = str(httpx.URL(self.base_url).copy_with(username=None, password=None))
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": f"sparseq-python/{version()}"}
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff

    def attempts(self, call: Call) -> Attempts:
        return Attempts(call, max_retries=self.max_retries, backoff=self.backoff, shown_url=self.shown_url)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("sparseq")
    except PackageNotFoundError:
        return "0"
