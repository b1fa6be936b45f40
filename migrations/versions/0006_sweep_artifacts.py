"""artifacts.sweep_id: a sweep's own artifacts (summary.json, summary.csv, pareto.png); artifacts.job_id nullable

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09

"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table (it cannot ALTER a column's nullability or add a foreign key)
    with op.batch_alter_table("artifacts") as batch:
        batch.alter_column("job_id", existing_type=sa.String(40), nullable=True)
        batch.add_column(sa.Column("sweep_id", sa.String(40), nullable=True))
        batch.create_foreign_key("fk_artifacts_sweep_id_sweeps", "sweeps", ["sweep_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_artifacts_sweep_id", ["sweep_id"])
        batch.create_unique_constraint("uq_artifacts_sweep_filename", ["sweep_id", "filename"])


def downgrade() -> None:
    # A sweep's artifacts have no job: they cannot stay once job_id is required again (their blobs become garbage
    # that sparseqd gc collects).
    op.execute("DELETE FROM artifacts WHERE job_id IS NULL")
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_constraint("uq_artifacts_sweep_filename", type_="unique")
        batch.drop_index("ix_artifacts_sweep_id")
        batch.drop_constraint("fk_artifacts_sweep_id_sweeps", type_="foreignkey")
        batch.drop_column("sweep_id")
        batch.alter_column("job_id", existing_type=sa.String(40), nullable=False)
