"""The dashboard's pages. Each handler answers through the very functions that answer the API (the route functions of
service/routes and the service functions under them), so a page shows exactly what the API would, under the same
ownership rules: another owner's job, file or artifact is "not found" here too."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.templating import Jinja2Templates

from compress import tasks
from service import files as file_service
from service import jobs as job_service
from service.deps import QueueDep, SessionDep, SettingsDep, StoreDep
from service.errors import APIError, BadRequest
from service.routes import artifacts as artifact_routes
from service.routes import files as file_routes
from service.routes import jobs as job_routes
from service.routes import system as system_routes
from service.schemas import EstimateRequest, JobCreate, JobStatus
from service.tables import JOB_STATUSES
from service.ui import session as ui_session
from service.ui import views
from service.ui.session import UiKey
from service.upload import receive_upload

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters.update(views.FILTERS)
templates.env.globals.update(statuses=JOB_STATUSES, views=views)

EXAMPLE_RECIPE = """\
# A small predefined-sparse LSTM language model: pick its training text below.
# (valid is optional; without it 10% of the training text is held out.)
# YAML or JSON; the JSON Schema of a recipe is served at /v1/schemas/recipe.
task: {type: language_model, max_vocab: 2000}
model: {cell: lstm, embedding_size: 32, hidden_size: 64}
method:
  type: predefined
  recurrent: {components: 2, input_density: 0.5}
training: {epochs: 1, batch_size: 16, bptt: 20, lr: 0.003}
"""


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("key", getattr(request.state, "ui_key", None))  # error pages keep the signed-in navigation
    return templates.TemplateResponse(request, template, context, status_code=status_code)


# -- signing in ------------------------------------------------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/ui/jobs", status_code=303)


@router.get("/signin")
async def signin_form(request: Request):
    return page(request, "signin.html", signed_in=False)


@router.post("/signin")
async def signin(request: Request, api_key: Annotated[str, Form(max_length=200)] = ""):
    ui_session.same_origin(request)
    plain = api_key.strip()
    key = await ui_session.check_key(request, plain) if plain else None
    if key is None:
        return page(request, "signin.html", 401, signed_in=False, error="That API key is not valid (or was revoked).")
    response = RedirectResponse("/ui/jobs", status_code=303)
    ui_session.sign_in(response, request, plain)
    return response


@router.post("/signout")
async def signout(request: Request):
    ui_session.same_origin(request)
    response = RedirectResponse("/ui/signin", status_code=303)
    ui_session.sign_out(response)
    return response


# -- jobs --------------------------------------------------------------------------------------------------------------


@router.get("/jobs")
def jobs_page(
    request: Request,
    key: UiKey,
    session: SessionDep,
    status: Annotated[str | None, Query()] = None,
    after: str | None = None,
):
    status = status or None
    if status is not None and status not in JOB_STATUSES:
        raise BadRequest(f"no job status {status!r}; one of {', '.join(JOB_STATUSES)}", param="status")
    chosen = JobStatus(status) if status is not None else None
    listing = job_routes.list_jobs(key=key, session=session, after=after, limit=25, status=chosen)
    return page(request, "jobs.html", key=key, jobs=listing, status=status)


@router.get("/jobs/new")
def new_job_page(request: Request, key: UiKey, session: SessionDep):
    return page(request, "new_job.html", key=key, **_form(session, key, EXAMPLE_RECIPE, {}, secrets.token_urlsafe(16)))


@router.post("/jobs/new")
def new_job(
    request: Request,
    key: UiKey,
    session: SessionDep,
    queue: QueueDep,
    settings: SettingsDep,
    recipe: Annotated[str, Form(max_length=200_000)] = "",
    train: Annotated[str, Form()] = "",
    valid: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "estimate",
    estimated: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form(max_length=64)] = "",
):
    """Two steps on one form: "Estimate" shows what the recipe costs; "Create job" is offered once the recipe on the
    form has been estimated, and creates the job only if it is still the recipe that was estimated."""
    files = {role: file_id for role, file_id in (("train", train), ("valid", valid)) if file_id}
    context = _form(session, key, recipe, files, idempotency_key or secrets.token_urlsafe(16))
    digest = hashlib.sha256(json.dumps([recipe, files]).encode()).hexdigest()
    limits = request.app.state.rate_limits
    try:
        raw = _parse_recipe_text(recipe)
        if action == "create" and estimated == digest:
            limits.check("jobs", key.key_hash)
            body = JobCreate(recipe=raw, files=files)
            job = job_routes.create_job(
                body=body,
                response=Response(),
                key=key,
                session=session,
                queue=queue,
                settings=settings,
                idempotency_key=f"ui-{context['idempotency_key']}",
            )
            return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)
        if action == "create":
            context["notice"] = "The recipe or its files changed since the estimate: here is the new one."
        limits.check("estimates", key.key_hash)
        context["estimate"] = system_routes.estimate(body=EstimateRequest(recipe=raw), key=key)
        context["estimated"] = digest
    except APIError as error:
        context["error"] = error
        response = page(request, "new_job.html", error.status, key=key, **context)
        response.headers.update(error.headers or {})  # Retry-After of a rate limit
        return response
    return page(request, "new_job.html", key=key, **context)


def _parse_recipe_text(text: str) -> dict[str, Any]:
    """YAML (JSON is YAML too), read with the safe loader: plain data only."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise BadRequest(f"the recipe is neither YAML nor JSON{where}", param="recipe") from None
    if not isinstance(raw, dict):
        raise BadRequest("the recipe must be a mapping with task, model, method and training", param="recipe")
    return raw


def _form(session, key, recipe: str, files: dict[str, str], idempotency_key: str) -> dict[str, Any]:
    listing = file_routes.list_files(key=key, session=session, after=None, limit=100, purpose=None)
    usable = [f for f in listing.data if f.status == "processed"]
    return {"recipe": recipe, "files": files, "choices": usable, "idempotency_key": idempotency_key}


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: str, key: UiKey, session: SessionDep, store: StoreDep):
    job = job_service.render(job_service.get_job(session, owner=key.owner, job_id=job_id))
    artifacts = artifact_routes.list_artifacts(job_id=job_id, key=key, session=session).data
    report_artifact = views.report_artifact(artifacts)
    report = None
    if report_artifact is not None:
        report = views.read_report(store, report_artifact.sha256, report_artifact.bytes)
    events = job_routes.list_events(job_id=job_id, key=key, session=session, after=None, limit=15).data
    return page(
        request,
        "job.html",
        key=key,
        job=job,
        artifacts=artifacts,
        plots=views.plots(artifacts),
        report=report,
        tensors=views.tensor_rows(report),
        events=events,
        recipe_json=json.dumps(job.recipe, indent=2),
    )


@router.get("/jobs/{job_id}/live")
def job_live(request: Request, job_id: str, key: UiKey, session: SessionDep):
    """The live part of the job page, polled by dashboard.js while the job runs."""
    job = job_service.render(job_service.get_job(session, owner=key.owner, job_id=job_id))
    return page(request, "_live.html", job=job)


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: str, key: UiKey, session: SessionDep):
    job_routes.cancel_job(job_id=job_id, key=key, session=session, request=request)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


# -- files and artifacts ---------------------------------------------------------------------------------------------


@router.get("/files")
def files_page(request: Request, key: UiKey, session: SessionDep, after: str | None = None):
    listing = file_routes.list_files(key=key, session=session, after=after, limit=50, purpose=None)
    return page(request, "files.html", key=key, files=listing, purposes=list(tasks.purposes()))


@router.post("/files")
async def upload(request: Request, key: UiKey, session: SessionDep, store: StoreDep, settings: SettingsDep):
    """The form posts multipart/form-data with 'purpose' and 'file', exactly what POST /v1/files takes."""
    try:
        await run_in_threadpool(request.app.state.rate_limits.check, "uploads", key.key_hash)
        received = await receive_upload(request, store, settings.max_upload_bytes)
        file = await run_in_threadpool(file_service.create_file, session, store, owner=key.owner, upload=received)
    except APIError as error:
        listing = await run_in_threadpool(
            file_routes.list_files, key=key, session=session, after=None, limit=50, purpose=None
        )
        response = page(
            request, "files.html", error.status, key=key, files=listing, purposes=list(tasks.purposes()), error=error
        )
        response.headers.update(error.headers or {})
        return response
    return RedirectResponse(f"/ui/files?uploaded={file.id}", status_code=303)


@router.get("/artifacts/{artifact_id}/content")
def artifact(artifact_id: str, key: UiKey, session: SessionDep, store: StoreDep):
    """Downloads and the pictures on the job page (an <img> shows an attachment all the same)."""
    response = artifact_routes.artifact_content(artifact_id=artifact_id, key=key, session=session, store=store)
    if response.headers.get("content-disposition", "").rstrip('"').endswith(".png"):
        response.headers["content-type"] = "image/png"  # the API sends bytes; a page shows them as a picture
    return response
