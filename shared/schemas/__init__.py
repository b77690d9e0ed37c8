"""The JSON Schemas shipped with the app (request, tracked images, replication rules), loaded once each."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

# jsonschema is imported on first use, not at cold start: see docs/benchmarks.md.


@cache
def schema(name: str) -> dict[str, Any]:
    """A shipped schema by file name, e.g. `import-request.v1.json`."""
    loaded: dict[str, Any] = json.loads(resources.files(__name__).joinpath(name).read_text())
    return loaded


@cache
def validator(name: str) -> Draft202012Validator:
    """A Draft 2020-12 validator for a shipped schema, with format checks (date-time and the like)."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(schema(name), format_checker=Draft202012Validator.FORMAT_CHECKER)
