"""Celery workers: run a job by id, at-least-once safe, resuming from the last training state."""
