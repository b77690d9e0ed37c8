"""Any error a CLI command ends in, as one line saying what is wrong and what to do, with its exit code.

A person at a terminal makes mistakes the code cannot prevent: a wrong path to `--config`, a settings file
that is not JSON, storage that is not running (Azurite stopped), no sign-in. Each is a kind here, named by
what the person sees and fixes; a traceback is for `--debug` (and for a bug, which says so).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cli.connection import MissingStorageSetting
from cli.status import CliError
from cli.terminal import printable
from shared.azure.storage import CONNECTION, StorageSettingsError
from shared.core.settings import SettingsError

# The Azure SDK is imported where it is used: `--help` and mistakes in the arguments answer without it.

EXIT_FAILED, EXIT_USAGE = 1, 2
_HOST_PORT = re.compile(r"host='([^']+)', port=(\d+)")
_ENDPOINT = re.compile(r"(?:Queue|Table)Endpoint=([^;]+)", re.IGNORECASE)
_REASON = re.compile(r"\[Errno -?\d+\] ([^'\"\)]+)|(Name or service not known|Connection refused|timed out)")


@dataclass(frozen=True)
class Problem:
    """What to print (`error: <message>`) and the exit code."""

    message: str
    exit_code: int


def explain(err: BaseException, args: argparse.Namespace) -> Problem:
    """The one line for `err`: what is wrong and what to do about it."""
    problem = _missing_package(err) if isinstance(err, ModuleNotFoundError) else _explain(err, args)
    one_line = " ".join(printable(problem.message).replace("\\n", " ").split())
    return Problem(one_line, problem.exit_code)


def _missing_package(err: ModuleNotFoundError) -> Problem:
    """`python -m cli` with a Python that lacks the app's packages (the repo's .venv not active): say which to use
    (before anything else is imported, since that would fail the same way)."""
    root = Path(__file__).resolve().parent.parent
    return Problem(f"this Python ({sys.executable}) has no module {err.name!r}: run the CLI as {root}/bin/acr-import, "
                   f"or {root}/.venv/bin/python -m cli (`make venv` creates the .venv)", EXIT_USAGE)


def _explain(err: BaseException, args: argparse.Namespace) -> Problem:
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(err, (CliError, SettingsError, MissingStorageSetting, StorageSettingsError)):
        return Problem(str(err), EXIT_USAGE)
    if isinstance(err, OSError) and getattr(err, "filename", None) and not isinstance(err, ConnectionError):
        return Problem(f"{_which_file(err.filename, args)}: {err.strerror or type(err).__name__}; "
                       "give the path of an existing file", EXIT_USAGE)
    if isinstance(err, json.JSONDecodeError):
        return Problem(f"{_which_file(None, args)} is not JSON ({err.msg} at line {err.lineno} column {err.colno}); "
                       "fix the file, or start from local.settings.sample.json", EXIT_USAGE)
    if isinstance(err, UnicodeDecodeError):
        return Problem(f"{_which_file(None, args)} is not UTF-8 text; give a JSON file", EXIT_USAGE)
    if isinstance(err, ServiceRequestError):
        return Problem(_unreachable(err), EXIT_USAGE)
    if isinstance(err, ClientAuthenticationError):
        return Problem("no usable sign-in for storage: run `az login` (or set AzureWebJobsStorage to a connection "
                       "string, as `make run` writes in local.settings.json)", EXIT_USAGE)
    if isinstance(err, HttpResponseError):
        code = getattr(err, "error_code", None) or getattr(err, "reason", None) or ""
        if code in ("QueueNotFound", "TableNotFound"):
            return Problem(f"storage answered {code}: check IMPORT_QUEUE and IMPORT_STATUS_TABLE (the app creates "
                           "<IMPORT_QUEUE>, its -rejected and -poison queues and the table when it is deployed or "
                           "started with `make run`)", EXIT_USAGE)
        hint = (" (your sign-in needs Storage Queue Data Contributor and Storage Table Data Contributor)"
                if err.status_code == 403 else "")
        return Problem(f"storage answered {err.status_code} {code}{hint}", EXIT_FAILED)
    first = str(err).splitlines()[0][:300] if str(err) else ""
    return Problem(f"unexpected {type(err).__name__}: {first} (a bug: run again with --debug for the traceback "
                   "and report it)", EXIT_FAILED)


def _which_file(filename: str | None, args: argparse.Namespace) -> str:
    """Which flag named the file, so the person knows which path to fix."""
    config, settings = getattr(args, "config", None), getattr(args, "settings", None)
    if filename is not None and filename not in (config, settings):
        return f"{filename}"
    if settings and (filename == settings or (filename is None and not config)):
        return f"--settings {settings}"
    if config:
        return f"--config {config}"
    return f"{filename}" if filename else "a settings file"


def _unreachable(err: BaseException) -> str:
    """Where the CLI could not connect to, and how to start it (Azurite locally)."""
    text = f"{err} {err.__cause__ or ''}"
    found = _HOST_PORT.search(text)
    where = f"{found.group(1)}:{found.group(2)}" if found else ""
    if not where:
        endpoint = _ENDPOINT.search(os.environ.get(CONNECTION, ""))
        where = endpoint.group(1) if endpoint else "storage"
    reason = _REASON.search(text)
    why = next((g for g in reason.groups() if g), "") if reason else "no connection"
    local = any(h in where for h in ("127.0.0.1", "localhost", "azurite")) or "UseDevelopmentStorage" in \
        os.environ.get(CONNECTION, "")
    todo = ("is the local stack running? start it with `make stack-up` (or `make run`)" if local
            else "check AzureWebJobsStorage and your network")
    return f"cannot connect to {where} ({why.strip()}): {todo}"
