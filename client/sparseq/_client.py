"""``Sparseq`` and ``AsyncSparseq``: the API as resources (``client.files``, ``client.jobs``, ``client.sweeps``,
``client.artifacts``, ``client.tasks``) and ``client.estimate``. The two clients have the same methods; the async
ones are awaited and their listings are iterated with ``async for``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pydantic

from sparseq import _calls
from sparseq._base import (
    CHUNK,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Call,
    Download,
    Options,
    Page,
    Watch,
    connection_error,
    parse,
    parse_json,
    plan_downloads,
    safe_name,
)
from sparseq._exceptions import status_error
from sparseq._models import Artifact, Deleted, Estimate, Event, FileObject, Job, Sweep, TaskList

M = TypeVar("M", bound=pydantic.BaseModel)
PAGE_SIZE = 100
SWEEP_KEYS = ("recipe", "grid", "overrides", "files", "max_parallel")


def _sweep_body(recipe: dict[str, Any], grid, overrides, files, max_parallel) -> dict[str, Any]:
    return {"recipe": recipe, "grid": grid, "overrides": overrides, "files": files, "max_parallel": max_parallel}


class _Resource:
    def __init__(self, client) -> None:
        self._client = client


# -- synchronous ------------------------------------------------------------------------------------------------------


class Files(_Resource):
    def upload(self, file: str | Path, *, purpose: str, filename: str | None = None) -> FileObject:
        """Stream a file from disk; ``purpose`` is what it is for (``client.tasks.list().purposes`` lists them). It
        is validated for that purpose before it is listed."""
        return self._client._object(FileObject, _calls.upload(file, purpose, filename))

    def list(self, *, purpose: str | None = None, page_size: int = PAGE_SIZE) -> Iterator[FileObject]:
        """Every file, newest first, page after page as the iteration goes."""
        return self._client._pages(FileObject, "/v1/files", page_size, purpose=purpose)

    def retrieve(self, file_id: str) -> FileObject:
        return self._client._object(FileObject, _calls.file(file_id))

    def delete(self, file_id: str) -> Deleted:
        return self._client._object(Deleted, _calls.delete_file(file_id))

    def download(self, file_id: str, destination: str | Path | None = None, *, overwrite: bool = False) -> Path:
        """The file's bytes, checked against its sha256; by default under its own name in the current directory."""
        described = _calls.file(file_id)
        if destination is None:
            destination = safe_name(self.retrieve(file_id).filename)
        return self._client._download(described.path, destination, overwrite=overwrite)


class Jobs(_Resource):
    def create(
        self, recipe: dict[str, Any], *, files: dict[str, str] | None = None, idempotency_key: str | None = None
    ) -> Job:
        """Submit a recipe (its JSON Schema: ``client.recipe_schema()``) with its data: role -> file id. Every
        attempt carries one Idempotency-Key, so a retry never makes a second job."""
        return self._client._object(Job, _calls.create_job(recipe, files, idempotency_key))

    def list(self, *, status: str | None = None, page_size: int = PAGE_SIZE) -> Iterator[Job]:
        return self._client._pages(Job, "/v1/jobs", page_size, status=status)

    def retrieve(self, job_id: str) -> Job:
        return self._client._object(Job, _calls.job(job_id))

    def cancel(self, job_id: str) -> Job:
        return self._client._object(Job, _calls.cancel_job(job_id))

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job succeeded, failed or was cancelled and return it (a failed job is returned, not
        raised). ``on_update(job)`` is called whenever its status, progress or live report changed. TimeoutError
        after ``timeout`` seconds; the job goes on running."""
        watch = Watch(f"job {job_id}", timeout, poll_interval, on_update)
        while (delay := watch.observe(job := self.retrieve(job_id))) is not None:
            time.sleep(delay)
        return job

    def events(self, job_id: str, *, page_size: int = PAGE_SIZE) -> Iterator[Event]:
        """The job's events, newest first."""
        return self._client._pages(Event, f"{_calls.job(job_id).path}/events", page_size)

    def artifacts(self, job_id: str) -> list[Artifact]:
        return self._client._listing(Artifact, _calls.job_artifacts(job_id))

    def download(self, job_id: str, directory: str | Path = ".", *, overwrite: bool = False) -> list[Path]:
        """Every artifact of the job into ``directory`` under its own name, each checked against its sha256."""
        targets = plan_downloads(f"job {job_id}", self.artifacts(job_id), directory, overwrite)
        return [self._client.artifacts.download(i, path, overwrite=overwrite) for i, path in targets]


class Artifacts(_Resource):
    def retrieve(self, artifact_id: str) -> Artifact:
        return self._client._object(Artifact, _calls.artifact(artifact_id))

    def download(self, artifact_id: str, destination: str | Path, *, overwrite: bool = False) -> Path:
        return self._client._download(_calls.artifact(artifact_id).path, destination, overwrite=overwrite)


class Sweeps(_Resource):
    def create(
        self,
        recipe: dict[str, Any],
        *,
        grid: dict[str, list[Any]] | None = None,
        overrides: list[dict[str, Any]] | None = None,
        files: dict[str, str] | None = None,
        max_parallel: int | None = None,
        idempotency_key: str | None = None,
    ) -> Sweep:
        """A grid (dotted recipe path -> values) and/or a list of overrides over a base recipe, run as jobs,
        ``max_parallel`` at once. Every combination is validated before any job is queued."""
        body = _sweep_body(recipe, grid, overrides, files, max_parallel)
        return self._client._object(Sweep, _calls.create_sweep(body, idempotency_key))

    def list(self, *, page_size: int = PAGE_SIZE) -> Iterator[Sweep]:
        return self._client._pages(Sweep, "/v1/sweeps", page_size)

    def retrieve(self, sweep_id: str) -> Sweep:
        return self._client._object(Sweep, _calls.sweep(sweep_id))

    def cancel(self, sweep_id: str) -> Sweep:
        return self._client._object(Sweep, _calls.cancel_sweep(sweep_id))

    def wait(
        self,
        sweep_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        on_update: Callable[[Sweep], None] | None = None,
    ) -> Sweep:
        """Poll until the sweep is no longer running and return it (TimeoutError after ``timeout`` seconds)."""
        watch = Watch(f"sweep {sweep_id}", timeout, poll_interval, on_update)
        while (delay := watch.observe(sweep := self.retrieve(sweep_id))) is not None:
            time.sleep(delay)
        return sweep

    def artifacts(self, sweep_id: str) -> list[Artifact]:
        """The sweep's own artifacts: summary.json, summary.csv, pareto.png (made when it ends)."""
        return self._client._listing(Artifact, _calls.sweep_artifacts(sweep_id))

    def download(
        self, sweep_id: str, directory: str | Path = ".", *, jobs: bool = False, overwrite: bool = False
    ) -> list[Path]:
        """The sweep's artifacts into ``directory``; with ``jobs`` also every child job's, under
        ``directory/<job id>/``."""
        targets = plan_downloads(f"sweep {sweep_id}", self.artifacts(sweep_id), directory, overwrite)
        paths = [self._client.artifacts.download(i, path, overwrite=overwrite) for i, path in targets]
        if jobs:
            for job_id in self.retrieve(sweep_id).jobs:
                paths += self._client.jobs.download(job_id, Path(directory) / job_id, overwrite=overwrite)
        return paths


class Tasks(_Resource):
    def list(self) -> TaskList:
        """The tasks a recipe can name (metric, data roles and the purpose each needs) and every upload purpose."""
        return self._client._object(TaskList, _calls.tasks())


class Sparseq:
    """One API key against one service. Use it as a context manager, or call :meth:`close`.

    ``api_key`` defaults to ``$SPARSEQ_API_KEY``, ``base_url`` to ``$SPARSEQ_URL`` (else http://127.0.0.1:8000).
    Reads are retried ``max_retries`` times on connection errors, 408, 429 and 5xx, waiting what ``Retry-After``
    says or a jittered exponential back-off; see the package's docstring for what is never retried.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._options = Options(api_key, base_url, timeout, max_retries, backoff)
        self.base_url = self._options.base_url
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._options.headers, timeout=timeout, transport=transport
        )
        self.files, self.jobs, self.artifacts = Files(self), Jobs(self), Artifacts(self)
        self.sweeps, self.tasks = Sweeps(self), Tasks(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Sparseq:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def estimate(
        self, recipe: dict[str, Any], *, vocab_size: int | None = None, num_tags: int | None = None
    ) -> Estimate:
        """Parameters, checkpoint bytes, FLOPs and training memory of a recipe, and the weights it expects."""
        return self._object(Estimate, _calls.estimate(recipe, vocab_size, num_tags))

    def recipe_schema(self) -> dict[str, Any]:
        """The recipe's JSON Schema."""
        return parse_json(self._send(_calls.recipe_schema()))

    # -- transport -------------------------------------------------------------------------------------------------

    def _send(self, call: Call) -> httpx.Response:
        attempts = self._options.attempts(call)
        while True:
            files = call.open_files() if call.open_files else None
            try:
                response = self._http.request(**call.request(files))
            except httpx.TransportError as error:
                delay = attempts.failed(error)
            else:
                delay = attempts.answered(response)
                if delay is None:
                    return response
            finally:
                for _, handle, *_ in (files or {}).values():
                    handle.close()
            time.sleep(delay)

    def _object(self, model: type[M], call: Call) -> M:
        return parse(model, self._send(call))

    def _listing(self, model: type[M], call: Call) -> list[M]:
        return Page.parse(model, self._send(call)).data

    def _pages(self, model: type[M], path: str, page_size: int, **params: Any) -> Iterator[M]:
        after = None
        while True:
            page = Page.parse(model, self._send(_calls.page(path, after, page_size, **params)))
            yield from page.data
            if (after := page.next_after()) is None:
                return

    def _download(self, path: str, destination: str | Path, *, overwrite: bool) -> Path:
        """Stream ``path``/content into ``destination``, verified (never retried: a stream cannot be replayed)."""
        download = Download(destination, overwrite=overwrite)
        try:
            with self._http.stream("GET", _calls.content(path)) as response:
                if response.is_error:
                    response.read()
                    raise status_error(response)
                download.started(response)
                for chunk in response.iter_bytes(CHUNK):
                    download.write(chunk)
            described = None if download.expected else parse_json(self._send(Call("GET", path)))
            return download.finish(path, described)
        except httpx.TransportError as error:
            raise connection_error(self._options.shown_url, error, path) from None
        finally:
            download.close()


# -- asynchronous -----------------------------------------------------------------------------------------------------


class AsyncFiles(_Resource):
    async def upload(self, file: str | Path, *, purpose: str, filename: str | None = None) -> FileObject:
        return await self._client._object(FileObject, _calls.upload(file, purpose, filename))

    def list(self, *, purpose: str | None = None, page_size: int = PAGE_SIZE) -> AsyncIterator[FileObject]:
        return self._client._pages(FileObject, "/v1/files", page_size, purpose=purpose)

    async def retrieve(self, file_id: str) -> FileObject:
        return await self._client._object(FileObject, _calls.file(file_id))

    async def delete(self, file_id: str) -> Deleted:
        return await self._client._object(Deleted, _calls.delete_file(file_id))

    async def download(self, file_id: str, destination: str | Path | None = None, *, overwrite: bool = False) -> Path:
        if destination is None:
            destination = safe_name((await self.retrieve(file_id)).filename)
        return await self._client._download(_calls.file(file_id).path, destination, overwrite=overwrite)


class AsyncJobs(_Resource):
    async def create(
        self, recipe: dict[str, Any], *, files: dict[str, str] | None = None, idempotency_key: str | None = None
    ) -> Job:
        return await self._client._object(Job, _calls.create_job(recipe, files, idempotency_key))

    def list(self, *, status: str | None = None, page_size: int = PAGE_SIZE) -> AsyncIterator[Job]:
        return self._client._pages(Job, "/v1/jobs", page_size, status=status)

    async def retrieve(self, job_id: str) -> Job:
        return await self._client._object(Job, _calls.job(job_id))

    async def cancel(self, job_id: str) -> Job:
        return await self._client._object(Job, _calls.cancel_job(job_id))

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        watch = Watch(f"job {job_id}", timeout, poll_interval, on_update)
        while (delay := watch.observe(job := await self.retrieve(job_id))) is not None:
            await asyncio.sleep(delay)
        return job

    def events(self, job_id: str, *, page_size: int = PAGE_SIZE) -> AsyncIterator[Event]:
        return self._client._pages(Event, f"{_calls.job(job_id).path}/events", page_size)

    async def artifacts(self, job_id: str) -> list[Artifact]:
        return await self._client._listing(Artifact, _calls.job_artifacts(job_id))

    async def download(self, job_id: str, directory: str | Path = ".", *, overwrite: bool = False) -> list[Path]:
        targets = plan_downloads(f"job {job_id}", await self.artifacts(job_id), directory, overwrite)
        return [await self._client.artifacts.download(i, path, overwrite=overwrite) for i, path in targets]


class AsyncArtifacts(_Resource):
    async def retrieve(self, artifact_id: str) -> Artifact:
        return await self._client._object(Artifact, _calls.artifact(artifact_id))

    async def download(self, artifact_id: str, destination: str | Path, *, overwrite: bool = False) -> Path:
        return await self._client._download(_calls.artifact(artifact_id).path, destination, overwrite=overwrite)


class AsyncSweeps(_Resource):
    async def create(
        self,
        recipe: dict[str, Any],
        *,
        grid: dict[str, list[Any]] | None = None,
        overrides: list[dict[str, Any]] | None = None,
        files: dict[str, str] | None = None,
        max_parallel: int | None = None,
        idempotency_key: str | None = None,
    ) -> Sweep:
        body = _sweep_body(recipe, grid, overrides, files, max_parallel)
        return await self._client._object(Sweep, _calls.create_sweep(body, idempotency_key))

    def list(self, *, page_size: int = PAGE_SIZE) -> AsyncIterator[Sweep]:
        return self._client._pages(Sweep, "/v1/sweeps", page_size)

    async def retrieve(self, sweep_id: str) -> Sweep:
        return await self._client._object(Sweep, _calls.sweep(sweep_id))

    async def cancel(self, sweep_id: str) -> Sweep:
        return await self._client._object(Sweep, _calls.cancel_sweep(sweep_id))

    async def wait(
        self,
        sweep_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 2.0,
        on_update: Callable[[Sweep], None] | None = None,
    ) -> Sweep:
        watch = Watch(f"sweep {sweep_id}", timeout, poll_interval, on_update)
        while (delay := watch.observe(sweep := await self.retrieve(sweep_id))) is not None:
            await asyncio.sleep(delay)
        return sweep

    async def artifacts(self, sweep_id: str) -> list[Artifact]:
        return await self._client._listing(Artifact, _calls.sweep_artifacts(sweep_id))

    async def download(
        self, sweep_id: str, directory: str | Path = ".", *, jobs: bool = False, overwrite: bool = False
    ) -> list[Path]:
        targets = plan_downloads(f"sweep {sweep_id}", await self.artifacts(sweep_id), directory, overwrite)
        paths = [await self._client.artifacts.download(i, path, overwrite=overwrite) for i, path in targets]
        if jobs:
            for job_id in (await self.retrieve(sweep_id)).jobs:
                paths += await self._client.jobs.download(job_id, Path(directory) / job_id, overwrite=overwrite)
        return paths


class AsyncTasks(_Resource):
    async def list(self) -> TaskList:
        return await self._client._object(TaskList, _calls.tasks())


class AsyncSparseq:
    """:class:`Sparseq` over ``httpx.AsyncClient``: the same resources and methods, awaited; listings are async
    iterators (``async for job in client.jobs.list()``). Use it as an async context manager, or await :meth:`close`."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._options = Options(api_key, base_url, timeout, max_retries, backoff)
        self.base_url = self._options.base_url
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._options.headers, timeout=timeout, transport=transport
        )
        self.files, self.jobs, self.artifacts = AsyncFiles(self), AsyncJobs(self), AsyncArtifacts(self)
        self.sweeps, self.tasks = AsyncSweeps(self), AsyncTasks(self)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSparseq:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def estimate(
        self, recipe: dict[str, Any], *, vocab_size: int | None = None, num_tags: int | None = None
    ) -> Estimate:
        return await self._object(Estimate, _calls.estimate(recipe, vocab_size, num_tags))

    async def recipe_schema(self) -> dict[str, Any]:
        return parse_json(await self._send(_calls.recipe_schema()))

    async def _send(self, call: Call) -> httpx.Response:
        attempts = self._options.attempts(call)
        while True:
            files = call.open_files() if call.open_files else None
            try:
                response = await self._http.request(**call.request(files))
            except httpx.TransportError as error:
                delay = attempts.failed(error)
            else:
                delay = attempts.answered(response)
                if delay is None:
                    return response
            finally:
                for _, handle, *_ in (files or {}).values():
                    handle.close()
            await asyncio.sleep(delay)

    async def _object(self, model: type[M], call: Call) -> M:
        return parse(model, await self._send(call))

    async def _listing(self, model: type[M], call: Call) -> list[M]:
        return Page.parse(model, await self._send(call)).data

    async def _pages(self, model: type[M], path: str, page_size: int, **params: Any) -> AsyncIterator[M]:
        after = None
        while True:
            page = Page.parse(model, await self._send(_calls.page(path, after, page_size, **params)))
            for item in page.data:
                yield item
            if (after := page.next_after()) is None:
                return

    async def _download(self, path: str, destination: str | Path, *, overwrite: bool) -> Path:
        download = Download(destination, overwrite=overwrite)
        try:
            async with self._http.stream("GET", _calls.content(path)) as response:
                if response.is_error:
                    await response.aread()
                    raise status_error(response)
                download.started(response)
                async for chunk in response.aiter_bytes(CHUNK):
                    download.write(chunk)
            described = None if download.expected else parse_json(await self._send(Call("GET", path)))
            return download.finish(path, described)
        except httpx.TransportError as error:
            raise connection_error(self._options.shown_url, error, path) from None
        finally:
            download.close()
