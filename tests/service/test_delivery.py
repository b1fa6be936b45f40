"""An idempotent replay of a queued job publishes it when the broker holds no message for it (the request that made
it died between its commit and its publish, or the broker lost the message), and only then."""

from __future__ import annotations

from service.queue import waiting_job_ids
from tests.helpers.api import broker_messages, create_job, create_job_ok


def test_a_replay_publishes_a_queued_job_the_broker_lost_and_never_a_second_copy(client, alice, broker, train_file):
    job = create_job_ok(client, alice, train_file["id"], key="run-1")
    assert broker_messages(broker) == [{"task": "sparseq.run_job", "args": [job["id"]], "kwargs": {}}]

    replay = create_job(client, alice, train_file["id"], key="run-1")
    assert replay.status_code == 200 and replay.json()["id"] == job["id"]
    assert len(broker_messages(broker)) == 1  # its message is still waiting: nothing more is sent

    broker.flushall()  # what a broker restarted without persistence (or a publish that never happened) leaves
    replay = create_job(client, alice, train_file["id"], key="run-1")
    assert replay.status_code == 200 and replay.json()["status"] == "queued"
    assert broker_messages(broker) == [{"task": "sparseq.run_job", "args": [job["id"]], "kwargs": {}}]


def test_a_replay_of_a_started_or_finished_job_publishes_nothing(client, alice, broker, train_file):
    job = create_job_ok(client, alice, train_file["id"], key="run-2")
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice)
    broker.flushall()
    replay = create_job(client, alice, train_file["id"], key="run-2")
    assert replay.status_code == 200 and replay.json()["status"] == "cancelled"
    assert broker_messages(broker) == []


def test_waiting_job_ids_reads_the_job_ids_of_our_messages_only(client, alice, broker, train_file):
    ids = {create_job_ok(client, alice, train_file["id"])["id"] for _ in range(3)}
    broker.lpush("jobs", b"not a kombu message")
    broker.lpush("jobs", b'{"headers": {"task": "someone.else"}, "body": "", "properties": {}}')
    assert waiting_job_ids(broker) == ids
