# sparseq: one image for the API, the worker and the migrate step (docker-compose.yml picks the command).
# TORCH_INDEX_URL picks the torch build: the URL of PyTorch's CPU-only wheel index for a small image, or of the index
# for your CUDA version for a GPU worker (PyTorch's installation guide lists them); empty: the default index.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPARSEQ_DATA_DIR=/var/lib/sparseq

RUN groupadd --gid 10001 sparseq \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin sparseq \
    && mkdir -p /var/lib/sparseq \
    && chown sparseq:sparseq /var/lib/sparseq

WORKDIR /app

# torch first, pinned, from the chosen index: the project's own `torch>=2.3,<3` is then already satisfied and pip
# never swaps in another build (the Makefile does the same).
RUN if [ -n "${TORCH_INDEX_URL}" ]; then \
        pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
    else \
        pip install "torch==${TORCH_VERSION}"; \
    fi

COPY pyproject.toml README.md alembic.ini ./
COPY compress ./compress
COPY service ./service
COPY workers ./workers
COPY client ./client
COPY migrations ./migrations
# The Alembic scripts (migrations/) ship inside the service package as service/migrations, so a plain install
# carries them. The SDK and the `sparseq` command (client/, its own distribution) come along for `docker compose exec`.
RUN pip install ./client .

USER 10001:10001
VOLUME ["/var/lib/sparseq"]
EXPOSE 8000
ENTRYPOINT ["sparseqd"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
