"""The importImage long-running operation: checks and copy in a background thread, in the order ACR
applies them (source, manifest limit, NoForce tag conflict, copy), with scripted faults first."""

from __future__ import annotations

import logging
import threading
import time

from dev.azure_standin.data_plane import CopyFailed, CopyJob, DataPlane
from dev.azure_standin.errors import ArmError
from dev.azure_standin.world import Operation, World

log = logging.getLogger("azure_standin.import")


def _fault_error(rule: dict) -> CopyFailed | None:
    fail = rule.get("fail")
    if fail is None:
        return None
    if fail == "copy_blobs":
        return CopyFailed("InvalidParameters", "Error copying blobs")
    return CopyFailed(fail.get("code", "InternalServerError"), fail.get("message", "Internal error"))


def run_import(world: World, data_plane: DataPlane, op: Operation, job: CopyJob, force: bool) -> None:
    """Drive one operation to Succeeded or Failed; never raises (the thread has no caller)."""
    try:
        rule = world.next_fault("operation") or {}
        if rule.get("hang"):
            log.info("%s: scripted to never finish", op.id)
            return
        image = data_plane.inspect(job)
        world.update_operation(op, pending=list(image.manifests))
        limit = world.setting("manifest_limit")
        if len(image.manifests) > limit:
            raise CopyFailed("InvalidParameters",
                             f"The image has {len(image.manifests)} manifests, more than the "
                             f"{limit} allowed per import.")
        if not force:
            existing = data_plane.existing_tags(job)
            if existing:
                raise CopyFailed("Conflict", f"Tag {existing[0]} already exists in target registry.")
        time.sleep(float(rule.get("delay", 0)))
        fault = _fault_error(rule)
        if fault is not None:
            raise fault
        digest = data_plane.copy(job)
        world.update_operation(op, status="Succeeded", pending=[], digest=digest, ended=time.time())
        log.info("%s: imported %s@%s into %s", op.id, job.repository, digest, job.target.name)
    except CopyFailed as failure:
        status = 409 if failure.code == "Conflict" else 400
        world.update_operation(op, status="Failed", ended=time.time(),
                               error=ArmError(status, failure.code, failure.message))
        log.info("%s: failed: %s", op.id, failure.code)
    except Exception as exc:
        log.exception("%s: crashed", op.id)
        world.update_operation(op, status="Failed", ended=time.time(), error=ArmError(
            500, "InternalServerError", f"Import failed: {type(exc).__name__}"))


def start_import(world: World, data_plane: DataPlane, op: Operation, job: CopyJob, force: bool) -> None:
    threading.Thread(target=run_import, args=(world, data_plane, op, job, force),
                     name=op.id, daemon=True).start()
