"""Bindings only: each trigger hands its input to the core in `shared/` and maps nothing else.

Function names are a contract (DESIGN.md): import_image, refresh_tracked_images, replicate_on_push.
The HTTP API (submit_import, import_status, list_imports) answers whatever shared/imports/http_api.py decides;
the operator endpoints (ops_*) whatever shared/ops decides; the status page (status_page, status_page_asset)
is shared/ops/page.py's files.
"""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from shared import app_context
from shared.azure import telemetry
from shared.azure.status import prune_expired
from shared.core.settings import PRUNE
from shared.dispatch import handle_import_message, handle_poison_message
from shared.imports import http_api
from shared.ops import access, answers, health, page, refresh_runs, replication_log
from shared.ops import imports as ops_imports
from shared.refresh.run import refresh_for, refresh_log
from shared.replication.events import event_document
from shared.replication.journal import journal
from shared.replication.replicate import replicate

telemetry.configure_from_environment()  # no-op, and no OpenTelemetry import, without App Insights
app = func.FunctionApp()


@app.queue_trigger(arg_name="msg", queue_name="%IMPORT_QUEUE%", connection="AzureWebJobsStorage")
def import_image(msg: func.QueueMessage) -> None:
    handle_import_message(app_context.worker(), msg.get_body(), message_id=msg.id,
                          dequeue_count=msg.dequeue_count or 1)


@app.queue_trigger(arg_name="msg", queue_name="%IMPORT_QUEUE%-poison", connection="AzureWebJobsStorage")
def import_image_poison(msg: func.QueueMessage) -> None:
    handle_poison_message(app_context.worker(), msg.get_body(), message_id=msg.id,
                          dequeue_count=msg.dequeue_count or 1)


@app.timer_trigger(arg_name="timer", schedule="%REFRESH_SCHEDULE%", run_on_startup=False, use_monitor=True)
def refresh_tracked_images(timer: func.TimerRequest) -> None:
    refresh_for(app_context.worker())


@app.event_grid_trigger(arg_name="event")
def replicate_on_push(event: func.EventGridEvent) -> None:  # a func.CloudEvent for CloudEvents 1.0
    replicate(app_context.worker(), event_document(event))


@app.route(route="imports", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def submit_import(req: func.HttpRequest) -> func.HttpResponse:
    worker = app_context.worker()
    return _http(http_api.submit_import(req.get_body(), req.url, worker.settings, worker.status,
                                        worker.queues.enqueue))


@app.route(route="imports/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def import_status(req: func.HttpRequest) -> func.HttpResponse:
    return _http(http_api.lookup_status(req.route_params.get("id", ""), app_context.worker().status))


@app.route(route="imports", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def list_imports(req: func.HttpRequest) -> func.HttpResponse:
    return _http(http_api.list_imports(req.url, app_context.worker().status))


# --- operator endpoints: read-only JSON under /api/ops (shared/ops); OPERATOR_SIGN_IN picks the auth level ---
OPS_ACCESS = access.operator_access()
OPS_AUTH = func.AuthLevel(OPS_ACCESS.auth_level)


def _ops(req: func.HttpRequest, respond: Callable[[app_context.Worker], http_api.ApiResponse]) -> func.HttpResponse:
    return _http(answers.answer(OPS_ACCESS, req.headers, app_context.worker, respond))


@app.route(route="ops/imports", methods=["GET"], auth_level=OPS_AUTH)
def ops_list_imports(req: func.HttpRequest) -> func.HttpResponse:
    return _ops(req, lambda worker: http_api.list_imports(req.url, worker.status))


@app.route(route="ops/imports/{id}", methods=["GET"], auth_level=OPS_AUTH)
def ops_import_detail(req: func.HttpRequest) -> func.HttpResponse:
    return _ops(req, lambda worker: ops_imports.import_detail(req.url, req.route_params.get("id", ""), worker.status))


@app.route(route="ops/health", methods=["GET"], auth_level=OPS_AUTH)
def ops_health(req: func.HttpRequest) -> func.HttpResponse:
    return _ops(req, lambda worker: health.health(req.url, worker.settings, worker.status, worker.queues,
                                                  worker.clock()))


@app.route(route="ops/refresh", methods=["GET"], auth_level=OPS_AUTH)
def ops_refresh(req: func.HttpRequest) -> func.HttpResponse:
    return _ops(req, lambda worker: refresh_runs.refresh(req.url, worker.settings, refresh_log(worker.settings),
                                                         worker.clock()))


@app.route(route="ops/replication", methods=["GET"], auth_level=OPS_AUTH)
def ops_replication(req: func.HttpRequest) -> func.HttpResponse:
    return _ops(req, lambda worker: replication_log.replication(req.url, journal(worker.settings.status_table),
                                                                worker.clock()))
# --- end of the operator endpoints ---


# The status page's shell and assets hold no data and no secret: anonymous at the host (shared/ops/page.py).
@app.route(route="ui", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    return _file(page.index())


@app.route(route="ui/{asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def status_page_asset(req: func.HttpRequest) -> func.HttpResponse:
    return _file(page.asset(req.route_params.get("asset", "")))


def _file(answer: page.PageFile) -> func.HttpResponse:
    return func.HttpResponse(answer.body, status_code=answer.status, headers=answer.headers,
                             mimetype=answer.mimetype, charset="utf-8")


def _http(answer: http_api.ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(answer.text(), status_code=answer.status, headers=answer.headers,
                             mimetype="application/json")


@app.timer_trigger(arg_name="timer", schedule="0 17 3 * * *", run_on_startup=False, use_monitor=True)
def prune_import_status(timer: func.TimerRequest) -> None:
    if app_context.usable_for(PRUNE):  # a mistyped retention must not delete what it meant to keep
        worker = app_context.worker()
        prune_expired(worker.status, worker.settings.status_retention_days)
