"""Health, readiness, Prometheus metrics and the cost estimate."""

from __future__ import annotations

import functools
import gc
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from compress import tasks
from service import jobs as job_service
from service.db import ping
from service.deps import CurrentKey, SessionDep
from service.errors import Unauthorized
from service.http_errors import responses
from service.jobs import parse_recipe
from service.lifecycle import JOB_STATUSES
from service.schemas import Estimate, EstimateRequest, Health, Readiness, RecipeSchema, TaskList, TaskObject
from service.supervisor import read_worker_status

router = APIRouter()  # tags per route: the estimate and the recipe schema are resources of their own
SYSTEM = ["system"]


def _freeze_long_lived() -> None:
    """Where the process keeps its startup objects out of the garbage collector's sight
    (service.app.create_served_app), objects made since then that live as long as the process join them."""
    if gc.get_freeze_count():
        gc.collect()
        gc.freeze()


@functools.cache
def _estimator():
    """compress.estimate, imported on the first estimate: it brings in torch and the model builders. Unfrozen, their
    ~140k objects would be scanned by every full collection (~40 ms each): the GET p99 that the freeze bought back.
    Frozen here, before any recipe is looked at, so that a first estimate that is refused freezes them too."""
    from compress.estimate import estimate

    _freeze_long_lived()
    return estimate


@functools.cache
def _after_first_estimate() -> None:
    """The first model built on the meta device loads more of torch (its meta kernels): frozen once it ran."""
    _freeze_long_lived()


@router.get("/healthz", response_model=Health, operation_id="getHealth", summary="Health", tags=SYSTEM)
def healthz():
    """The process is up."""
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="getReadiness",
    summary="Readiness",
    tags=SYSTEM,
    responses={503: {"model": Readiness, "description": "Something the service needs does not answer"}},
)
def readyz(request: Request):
    """The database and the broker answer. Under ``sparseqd serve``, ``worker`` tells the embedded worker's state
    (running, or restarting after it died), its pid and how often it was restarted."""
    checks = {"database": ping(request.app.state.sessions), "broker": False}
    checks["broker"] = bool(request.app.state.queue.ping())
    ready = all(checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    worker = read_worker_status(request.app.state.settings.data_dir)
    if worker is not None:  # jobs are accepted while the worker restarts: they wait in the queue
        body["worker"] = {k: worker.get(k) for k in ("state", "pid", "restarts", "last_exit_code", "restart_in_s")}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    operation_id="getMetrics",
    summary="Prometheus metrics",
    tags=SYSTEM,
    responses={  # JSON errors from a plain-text route: declared by hand (a model would be filed under text/plain)
        401: {
            "description": "Missing or wrong SPARSEQ_METRICS_TOKEN",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
        }
    },
)
def metrics(request: Request, session: SessionDep):
    """Prometheus text format: jobs by state, queue depth, request latency - totals of the whole service, nothing
    per owner or key. With ``SPARSEQ_METRICS_TOKEN`` set, only ``Authorization: Bearer <that token>`` reads it."""
    token = request.app.state.settings.metrics_token
    if token is not None:
        scheme, _, presented = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <SPARSEQ_METRICS_TOKEN>'", code="invalid_token")
    registry = CollectorRegistry()
    jobs = Gauge("sparseq_jobs", "jobs by state", ["state"], registry=registry)
    counts = job_service.count_by_status(session)
    for state in JOB_STATUSES:
        jobs.labels(state=state).set(counts.get(state, 0))
    depth = request.app.state.queue.depth()
    Gauge("sparseq_queue_depth", "jobs waiting in the broker", registry=registry).set(-1 if depth is None else depth)
    body = generate_latest(registry) + generate_latest(request.app.state.metrics_registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/tasks",
    response_model=TaskList,
    operation_id="listTasks",
    summary="The tasks a recipe can name",
    tags=["jobs"],
    responses=responses(401),
)
def list_tasks(_: CurrentKey):
    """Every registered task (compress.tasks): its metric, the data roles a job's ``files`` may fill and the purpose
    each needs; and every upload purpose. Clients read these here instead of knowing them."""
    return TaskList(
        data=[TaskObject(**definition.describe()) for definition in tasks.definitions()],
        purposes=list(tasks.purposes()),
    )


@router.get(
    "/v1/schemas/recipe",
    response_model=RecipeSchema,
    operation_id="getRecipeSchema",
    summary="The recipe's JSON Schema",
    tags=["jobs"],
)
def recipe_schema():
    """The JSON Schema of a job recipe (compress.spec.Recipe), version 1: what ``POST /v1/jobs`` takes as ``recipe``
    (the same as this document's Recipe component, whose definitions are components here too)."""
    from compress.spec import recipe_json_schema

    return JSONResponse(recipe_json_schema())  # as it is: the response model only documents it


@router.post(
    "/v1/estimate",
    response_model=Estimate,
    operation_id="estimateRecipe",
    summary="Estimate a recipe's cost",
    tags=["estimate"],
    responses=responses(400, 401, 422, 429),
)
def estimate(body: EstimateRequest, key: CurrentKey):
    """Trainable parameters, checkpoint size, FLOPs per step and training memory of a recipe, before any compute."""
    compute = _estimator()
    recipe = parse_recipe(body.recipe)
    result = Estimate(**compute(recipe, vocab_size=body.vocab_size, num_tags=body.num_tags).as_dict())
    _after_first_estimate()
    return result
