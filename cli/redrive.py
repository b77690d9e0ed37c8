"""`redrive`: after a fix (an allowlist, a credential set, a role), send dead-lettered requests again.

Two queues hold requests that ended badly. `<IMPORT_QUEUE>-rejected` holds the app's dead letters: the
request body **with secrets removed**, so an inline password cannot come back; `--credential NAME` puts a
configured credential set in its place, otherwise such a letter stays where it is. A letter whose body was
cut (too large) or was never JSON cannot be redriven either. `<IMPORT_QUEUE>-poison` holds what the
Functions host gave up on, as sent (normally `import_image_poison` turns those into dead letters at once).

Each request is checked with today's settings first (`parse_request`): one that would still be rejected
stays put, with its problems printed. A redriven request keeps its id, starts again at attempt 1, and its
status row gets a new `received` transition saying where it came from; its history is kept.
"""

from __future__ import annotations

import argparse
import base64
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cli.connection import queue_service
from cli.status import request_id_type, status_store
from cli.terminal import printable
from shared.core.outcome import State
from shared.core.redact import REMOVED
from shared.core.request import APP_FIELDS, Rejected, decode_body, fingerprint, parse_request
from shared.core.request_ids import is_safe_request_id
from shared.core.settings import Settings, load_settings
from shared.imports.claims import reserved_prefix

if TYPE_CHECKING:
    from azure.storage.queue import QueueClient, QueueMessage

    from shared.azure.status import StatusStore

INLINE_CREDENTIALS = ("username", "password")
RECEIVE_VISIBILITY_SECONDS = 300  # letters we look at are hidden meanwhile; kept ones are released at the end


@dataclass(frozen=True)
class Restored:
    """A dead letter turned back into a request, or why it cannot be."""

    request_id: str
    document: dict[str, Any] | None
    why_not: str = ""
    previously: str = ""


def _removed_fields(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _removed_fields(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _removed_fields(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and REMOVED in value else []


def restore_letter(letter: Any, fallback_id: str, *, credential: str | None) -> Restored:
    """A request from an app dead letter (`{"id", "state", "reason", "body", ...}`)."""
    if not isinstance(letter, dict) or "body" not in letter:
        return Restored(fallback_id, None, "not a dead letter of this app (no body)")
    request_id = str(letter.get("id") or fallback_id)
    previously = f"{letter.get('state', '?')}: {str(letter.get('reason', ''))[:300]}"
    body = letter["body"]
    if letter.get("bodyTruncated"):
        return Restored(request_id, None, "its body was cut to fit the dead-letter queue; send it again in full",
                        previously)
    if not isinstance(body, dict):
        return Restored(request_id, None, "its body was not a JSON object; send a corrected request", previously)
    return _restore_document(body, request_id, credential, previously)


def restore_poison(text: str, message_id: str, *, credential: str | None) -> Restored:
    """A request from a poison message: the body as it was sent (secrets intact)."""
    document, problem = decode_body(text)
    if problem or not isinstance(document, dict):
        return Restored(message_id, None, f"not a request: {problem or 'not a JSON object'}")
    request_id = document["id"] if isinstance(document.get("id"), str) and document["id"] else message_id
    return _restore_document(document, request_id, credential, "poisoned: the worker crashed on every delivery")


def _restore_document(body: dict[str, Any], request_id: str, credential: str | None, previously: str) -> Restored:
    if not is_safe_request_id(request_id):
        return Restored(request_id, None, "its id is not a usable request id; send it again with a new id",
                        previously)
    document = {k: v for k, v in body.items() if k not in APP_FIELDS}
    document["id"] = request_id
    inline = [name for name in INLINE_CREDENTIALS if name in document]
    if inline and credential:
        for name in inline:
            document.pop(name)
        document["credential"] = credential
    elif credential:
        document["credential"] = credential
    removed = _removed_fields(document)
    if removed and "password" in removed:
        return Restored(request_id, None, "its inline password was removed when it was dead-lettered; redrive "
                                          "with --credential NAME to use a configured credential set instead",
                        previously)
    if removed:
        return Restored(request_id, None, f"a secret was scrubbed from {', '.join(removed)}; send it again",
                        previously)
    return Restored(request_id, document, "", previously)


def judged(restored: Restored, settings: Settings) -> Restored:
    """Still `restored` if today's settings accept it, else why not (it then stays dead-lettered)."""
    if restored.document is None:
        return restored
    parsed = parse_request(json.dumps(restored.document), settings)
    if isinstance(parsed, Rejected):
        return Restored(restored.request_id, None, f"still rejected: {parsed.reason}", restored.previously)
    return restored


def redrive(args: argparse.Namespace) -> int:
    settings = load_settings()
    service = queue_service()
    target = service.get_queue_client(settings.import_queue)
    store = status_store() if not args.dry_run else None
    sources = {"rejected": settings.dead_letter_queue, "poison": settings.poison_queue}
    chosen = list(sources) if args.source == "all" else [args.source]
    wanted = set(args.id or ())
    moved = kept = 0
    for kind in chosen:
        queue = service.get_queue_client(sources[kind])
        held = []
        try:
            while moved + kept < args.max:
                batch = list(queue.receive_messages(max_messages=min(32, args.max - moved - kept),
                                                    visibility_timeout=RECEIVE_VISIBILITY_SECONDS))
                if not batch:
                    break
                for message in batch:
                    restored = _restored(kind, message, args.credential)
                    if wanted and restored.request_id not in wanted:
                        held.append(message)
                        continue
                    restored = judged(restored, settings)
                    if restored.document is None:
                        print(f"kept      {printable(restored.request_id)}  ({sources[kind]}): "
                              f"{printable(restored.why_not)}")
                        held.append(message)
                        kept += 1
                        continue
                    if store is None:  # --dry-run
                        print(f"would redrive {restored.request_id}  ({sources[kind]}; was "
                              f"{printable(restored.previously)})")
                        held.append(message)
                        moved += 1
                        continue
                    why_not = _send_again(store, target, restored, sources[kind], settings)
                    if why_not:
                        print(f"kept      {restored.request_id}  ({sources[kind]}): {why_not}")
                        held.append(message)
                        kept += 1
                        continue
                    queue.delete_message(message)
                    print(f"redriven  {restored.request_id}  ({sources[kind]}; was {printable(restored.previously)})")
                    moved += 1
        finally:
            for message in held:  # visible again at once for the next redrive (or a person's look)
                queue.update_message(message, visibility_timeout=0)
    verb = "would redrive" if args.dry_run else "redriven"
    print(f"{verb} {moved}, kept {kept}" + ("; follow them with: status ID --wait" if moved and not args.dry_run
                                             else ""))
    return 1 if kept else 0


def _restored(kind: str, message: QueueMessage, credential: str | None) -> Restored:
    if kind == "poison":
        return restore_poison(message.content, message.id, credential=credential)
    try:
        letter = json.loads(message.content)
    except ValueError:
        letter = None
    return restore_letter(letter, message.id, credential=credential)


def _send_again(store: StatusStore, queue: QueueClient, restored: Restored, source_queue: str,
                settings: Settings) -> str | None:
    """A new `received` transition first (so the worker's own transitions come after it), then the message;
    or why not. The row is reopened only when the request ended failed or rejected (or has no row): a
    letter must not restart a request that succeeded or is still running under its id (a dead letter can be
    a message refused because its id was another request's), nor take one of the app's reserved ids."""
    parsed = parse_request(json.dumps(restored.document), settings)
    assert not isinstance(parsed, Rejected)
    reason = f"redriven from {source_queue} by the CLI; was {restored.previously}"[:2000]
    row = store.get(restored.request_id)
    if row is None:
        if reserved_prefix(restored.request_id):
            return (f"its id starts with {reserved_prefix(restored.request_id)!r}, which only the app's own "
                    "requests use, and the app has no such request")
        opened = store.open(parsed, reason)
        row = opened.written
    elif row.state is State.RECEIVED and not row.carrier and row.fingerprint == fingerprint(parsed):
        pass  # reopened by an earlier redrive whose send failed: send it now
    elif row.state.ended_badly:
        if reserved_prefix(restored.request_id) and row.fingerprint != fingerprint(parsed):
            return f"its id is the app's own request, which asked something else (it is {row.state})"
        row = store.reopen(row, parsed, reason)
    else:
        return f"its id is taken by a request that is {row.state}; it is not restarted"
    if row is None:
        return "its status row changed meanwhile; try again"
    sent = queue.send_message(base64.b64encode(json.dumps(restored.document).encode()).decode())
    store.pin(row, sent.id)
    return None


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser(
        "redrive", help="send dead-lettered or poisoned requests again after a fix",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--from", dest="source", choices=("rejected", "poison", "all"), default="all",
                     help="which queue: <IMPORT_QUEUE>-rejected, <IMPORT_QUEUE>-poison, or both (default)")
    run.add_argument("--id", action="append", type=request_id_type,
                     help="only this request id (repeatable; default: every message)")
    run.add_argument("--credential", metavar="NAME",
                     help="use this credential set (replaces removed inline credentials)")
    run.add_argument("--dry-run", action="store_true", help="say what would be redriven; change nothing")
    run.add_argument("--max", type=int, default=1000, help="look at most this many messages (default 1000)")
    run.set_defaults(handler=redrive)

