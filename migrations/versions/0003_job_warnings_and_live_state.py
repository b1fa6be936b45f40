"""jobs.warnings and jobs.live: the verdict's warnings and the latest training state a job reported

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``warnings`` holds ``[{code, message, tensor}]`` (a tensor at its floor or pruned away, a result worse than the
reference allows, a target not reached); ``live`` the latest progress report (phase, step, total, loss, metric,
sparsity, ETA) so that ``GET /v1/jobs/{id}`` shows it without reading the events.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("warnings", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("live", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("live")
        batch.drop_column("warnings")
