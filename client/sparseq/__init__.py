"""The sparseq Python SDK and the ``sparseq`` command line. HTTP only: it needs httpx and pydantic, no torch.

    from sparseq import Sparseq

    client = Sparseq()  # SPARSEQ_API_KEY and SPARSEQ_URL (default http://127.0.0.1:8000) from the environment
    train = client.files.upload("ptb.train.txt", purpose="lm_text")
    job = client.jobs.create(recipe, files={"train": train.id})
    job = client.jobs.wait(job.id, on_update=lambda j: print(j.status, j.progress))
    paths = client.jobs.download(job.id, "out/")  # each checked against its sha256

``AsyncSparseq`` is the same over ``httpx.AsyncClient`` (``await client.jobs.create(...)``, ``async for``).

Errors: every one derives from :class:`SparseqError` (``status``, ``code``, ``message``, ``param``); an error answer
raises one class per status (``NotFoundError``, ``UnprocessableEntityError``, ``RateLimitError``...), no answer
``APIConnectionError`` or ``APITimeoutError``.

Retries (``max_retries``, default 3): reads and cancels on connection errors, 408, 429 and 5xx; creating a job or a
sweep on connection errors and 429, with one ``Idempotency-Key`` for all attempts, so a retry never makes a second
one; an upload only on 429 (the service refused it before reading), by opening the file again. The wait is the
service's ``Retry-After`` when it sends one (up to 60 s), else a jittered exponential back-off. Downloads are not
retried (a stream cannot be replayed); they are checked against their sha256, a failed one leaves nothing behind,
and none replaces an existing file unless asked to (``overwrite=True``). A server-given file name is reduced to its
last component.
"""

from sparseq._base import safe_name
from sparseq._client import AsyncSparseq, Sparseq
from sparseq._exceptions import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    DownloadError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SparseqError,
    UnprocessableEntityError,
)
from sparseq._models import (
    TERMINAL,
    Artifact,
    Deleted,
    Estimate,
    Event,
    FileObject,
    Job,
    JobLive,
    JobWarning,
    Sweep,
    SweepCell,
    Task,
    TaskList,
)

__all__ = [
    "TERMINAL",
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "Artifact",
    "AsyncSparseq",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "Deleted",
    "DownloadError",
    "Estimate",
    "Event",
    "FileObject",
    "InternalServerError",
    "Job",
    "JobLive",
    "JobWarning",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "Sparseq",
    "SparseqError",
    "Sweep",
    "SweepCell",
    "Task",
    "TaskList",
    "UnprocessableEntityError",
    "safe_name",
]
