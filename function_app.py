"""Bindings only: each trigger hands its input to the core in `shared/` and maps nothing else.

Function names are a contract (DESIGN.md): import_image, refresh_tracked_images, replicate_on_push.
"""

from __future__ import annotations

import azure.functions as func

from shared import app_context, refresh
from shared.worker import handle_import_message, handle_poison_message

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
    refresh.refresh_for(app_context.worker())
