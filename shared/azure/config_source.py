"""Reading the app's own configuration files (TRACKED_IMAGES, REPLICATION_RULES): a path in the app, or an
https blob URL. One loader for both, so both get the same bounds, identity and messages.

A blob URL is read with its SAS signature when it has one, else with the app's identity (the one
credential factory, shared/azure/arm.py `make_credential`, so a user-assigned identity from AZURE_CLIENT_ID is
used). The read is bounded: https only, no redirects (the token would follow them), a total deadline,
at most MAX_CONFIG_BYTES. A URL is read at most once per CACHE_SECONDS. Every error names the setting and
never the URL's query (a SAS signature).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from shared.azure.arm import make_credential
from shared.core.failures import ascii_count
from shared.core.settings import Settings

# `requests` is imported only when a blob is fetched: a cold start that reads a file never pays for it.

APP_ROOT = Path(__file__).resolve().parents[2]  # the app root: shared/azure/ is two levels down
MAX_CONFIG_BYTES = 1024 * 1024
READ_DEADLINE_SECONDS = 20.0  # in total; each socket read also times out after READ_TIMEOUT_SECONDS
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
CACHE_SECONDS = 60.0
STORAGE_SCOPE = "https://storage.azure.com/.default"
STORAGE_API_VERSION = "2021-08-06"


class ConfigUnavailable(ValueError):
    """The configuration cannot be read; the message starts with the setting's name."""


_cache: dict[tuple[str, str], tuple[float, str]] = {}
_lock = threading.Lock()


def read_config(setting: str, location: str, settings: Settings | None = None, *,
                fetch: Callable[[str, Settings | None], bytes] | None = None) -> str:
    """The text of the configuration at `location` (the value of `setting`)."""
    if "://" not in location:
        return _read_file(setting, location)
    if not location.lower().startswith("https://"):
        raise ConfigUnavailable(f"{setting}: only https:// URLs are read (the app would send its token in the "
                                f"clear), got {_without_query(location)!r}")
    key = (setting, location)
    with _lock:
        cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    data = fetch(location, settings) if fetch else fetch_blob(location, settings, setting=setting)
    text = _decode(setting, location, data)
    with _lock:
        _cache[key] = (time.monotonic(), text)
    return text


def forget_cached() -> None:
    """Drop cached blob reads (tests; a changed setting)."""
    with _lock:
        _cache.clear()


def _read_file(setting: str, location: str) -> str:
    path = Path(location)
    path = path if path.is_absolute() else APP_ROOT / path
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigUnavailable(f"{setting}: cannot read {path}: {err.strerror or type(err).__name__}") from None
    except ValueError as err:  # an embedded NUL and the like
        raise ConfigUnavailable(f"{setting}: cannot read {location!r}: {err}") from None
    return _decode(setting, str(path), data)


def _decode(setting: str, where: str, data: bytes) -> str:
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigUnavailable(f"{setting}: {_without_query(where)} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigUnavailable(f"{setting}: {_without_query(where)} is not UTF-8 (invalid byte at offset "
                                f"{err.start})") from None


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def fetch_blob(url: str, settings: Settings | None, *, setting: str = "") -> bytes:
    """A blob's bytes by SAS URL as it is, or else with the app's identity (Storage Blob Data Reader)."""
    import requests
    import urllib3

    shown = _without_query(url)
    name = setting or "configuration"
    headers = {"x-ms-version": STORAGE_API_VERSION, "Accept-Encoding": "identity"}
    if "sig" not in parse_qs(urlsplit(url).query):
        if settings is None:
            raise ConfigUnavailable(f"{name}: {shown} has no SAS signature and no identity is configured to read it")
        try:
            token = make_credential(settings).get_token(STORAGE_SCOPE).token
        except Exception as exc:  # azure-identity raises several kinds; the reason is the kind and its text
            raise ConfigUnavailable(f"{name}: could not get the app's token for {shown}: "
                                    f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") \
                from None
        headers["Authorization"] = f"Bearer {token}"
    deadline = time.monotonic() + READ_DEADLINE_SECONDS
    try:
        with requests.get(url, headers=headers, timeout=(CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS),
                          allow_redirects=False, stream=True) as answer:
            if answer.is_redirect or 300 <= answer.status_code < 400:
                raise ConfigUnavailable(f"{name}: {shown} answered HTTP {answer.status_code} (a redirect); "
                                        "redirects are not followed, so the app's token stays with the blob's host")
            if answer.status_code != 200:
                raise ConfigUnavailable(f"{name}: {shown} answered HTTP {answer.status_code}")
            declared = answer.headers.get("content-length", "")
            if ascii_count(declared) and (len(declared) > 15 or int(declared) > MAX_CONFIG_BYTES):
                raise ConfigUnavailable(f"{name}: {shown} is {declared} bytes; the limit is {MAX_CONFIG_BYTES}")
            chunks, size = [], 0
            while chunk := answer.raw.read1(65536, decode_content=False):  # one socket read each: the
                size += len(chunk)                                           # deadline is checked between
                chunks.append(chunk)
                if size > MAX_CONFIG_BYTES:
                    raise ConfigUnavailable(f"{name}: {shown} is larger than {MAX_CONFIG_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ConfigUnavailable(f"{name}: {shown} took longer than {READ_DEADLINE_SECONDS:.0f} s")
            return b"".join(chunks)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise ConfigUnavailable(f"{name}: cannot read {shown}: {type(exc).__name__}") from None
