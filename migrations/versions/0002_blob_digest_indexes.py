"""indexes on the blob digests of files and artifacts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Every upload locks its blob by digest (service.files.lock_blob), every deletion and ``sparseqd gc`` look up who still
refers to a digest: without these indexes each of those scans both tables, on SQLite while holding the write lock.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_files_sha256"), "files", ["sha256"], unique=False)
    op.create_index(op.f("ix_artifacts_sha256"), "artifacts", ["sha256"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_artifacts_sha256"), table_name="artifacts")
    op.drop_index(op.f("ix_files_sha256"), table_name="files")
