"""The producer side of the job queue: enqueue a job id by task *name* (the service never imports workers), and read
which job ids the broker holds (the reconciler in workers/reaper.py and an idempotent replay compare it with the
database, which is the source of truth for what must be delivered)."""

from __future__ import annotations

import base64
import json
import logging
import time
from functools import lru_cache

from celery import Celery

TASK_NAME = "sparseq.run_job"
QUEUE = "jobs"
# kombu's Redis transport keeps one list per priority step (the default steps 0, 3, 6, 9); priority 0 is the plain name.
PRIORITY_SEPARATOR = "\x06\x16"
QUEUE_LISTS = (QUEUE, *(f"{QUEUE}{PRIORITY_SEPARATOR}{step}" for step in (3, 6, 9)))
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's Redis transport: messages taken, not yet acknowledged

log = logging.getLogger("sparseq.queue")


@lru_cache(maxsize=4)
def producer(broker_url: str) -> Celery:
    app = Celery("sparseq-api", broker=broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=False,
        broker_transport_options={"max_retries": 2, "interval_start": 0, "interval_step": 0.5},
    )
    return app


def job_id_of(raw: bytes | dict) -> str | None:
    """The job id a kombu message carries (raw from a Redis list, or its decoded envelope); None for anything that is
    not our task."""
    try:
        envelope = json.loads(raw) if isinstance(raw, bytes | str) else raw
        if envelope.get("headers", {}).get("task") != TASK_NAME:
            return None
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return args[0] if args and isinstance(args[0], str) else None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def waiting_job_ids(client) -> set[str]:
    """Job ids with a message waiting on the broker's queue lists (``client``: a redis client of the broker)."""
    held: set[str] = set()
    for name in QUEUE_LISTS:
        for raw in client.lrange(name, 0, -1):
            job_id = job_id_of(raw)
            if job_id is not None:
                held.add(job_id)
    return held


def recently_taken_job_ids(client, within_s: float) -> set[str]:
    """Job ids whose message a worker took off the queue less than ``within_s`` seconds ago: kombu keeps a taken
    message in its ``unacked`` hash, scored in ``unacked_index`` by the time it was taken, until it is acknowledged.
    That worker is about to claim the job (or runs it). A message taken longer ago by a worker that then died before
    claiming is not counted: its job needs a new one (the claim's compare-and-set drops it if that worker was alive
    after all)."""
    tags = client.zrangebyscore(UNACKED_INDEX, time.time() - within_s, "+inf")
    held: set[str] = set()
    for raw in client.hmget(UNACKED, tags) if tags else []:
        try:
            job_id = job_id_of(json.loads(raw)[0]) if raw is not None else None
        except (ValueError, IndexError, TypeError):
            job_id = None
        if job_id is not None:
            held.add(job_id)
    return held


class CeleryQueue:
    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url

    def enqueue(self, job_id: str) -> None:
        producer(self.broker_url).send_task(TASK_NAME, args=[job_id], queue=QUEUE)

    def waiting(self) -> set[str]:
        with producer(self.broker_url).connection_for_write() as connection:
            return waiting_job_ids(connection.default_channel.client)

    def ensure_enqueued(self, job_id: str) -> bool:
        """Publish ``job_id`` unless a message for it is already waiting. Returns whether it was published."""
        if job_id in self.waiting():
            return False
        self.enqueue(job_id)
        return True

    def depth(self) -> int | None:
        try:
            with producer(self.broker_url).connection_for_write() as connection:
                return connection.default_channel.client.llen(QUEUE)
        except Exception:
            return None

    def ping(self) -> bool:
        try:
            with producer(self.broker_url).connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception:
            return False
