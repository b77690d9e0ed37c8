"""Container image references, parsed and normalised by the OCI distribution grammar.

The grammar is assembled below from small named pieces (host, port, path component, tag, digest), and
Docker Hub's defaults (``docker.io``, ``library/``, ``latest``) are applied in one place,
``_with_defaults``, so a reader finds every normalisation decision there.

Decisions where the grammar leaves room, all covered by tests:

- Registry hosts are case-insensitive (RFC 4343): any case is accepted and lowercased, so
  ``MyRegistry.AzureCR.io/app`` and ``myregistry.azurecr.io/app`` are the same image. Docker's own
  first-component rule also treats an uppercase first component as a host; here the rule is exactly
  "contains ``.`` or ``:``, or is ``localhost``", so ``UPPER/repo`` is a Docker Hub repository and is
  rejected as not lowercase rather than silently read as a registry called ``upper``.
- A reference without ``/`` whose name looks like a host (``localhost``, or contains ``.``) is rejected
  as naming no repository: ``localhost:5000`` and ``myregistry.azurecr.io`` are almost always a
  forgotten repository, not Docker Hub's ``library/localhost`` with tag ``5000``.
- Ports are 1..65535 without leading zeros, so every registry has one spelling.
- The 255-character name limit applies to the normalised ``registry/repository``, as in Docker.
- Allowlists compare hosts in the form ``canonical_registry_host`` gives; how entries match (wildcards,
  ports, resource ids) is decided in shared/core/policy.py.
"""

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import NewType

# Docker Hub's names, defined here only: the name references use, the host its registry API answers on, and
# every spelling of it that means the same registry.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({DOCKER_HUB, "index.docker.io", DOCKER_HUB_API_HOST, "registry.hub.docker.com"})
DOCKER_HUB_OFFICIAL_NAMESPACE = "library"
DEFAULT_TAG = "latest"

MAX_INPUT_LENGTH = 1024
MAX_NAME_LENGTH = 255
MAX_TAG_LENGTH = 128
MAX_HOST_LENGTH = 253
MAX_LABEL_LENGTH = 63
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_PATH_COMPONENT = re.compile(rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*")
_PATH_CHARACTERS = re.compile(r"[a-z0-9._-]+")
_VALID_SEPARATOR = re.compile(_SEPARATOR)
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_PORT = re.compile(r"[0-9]+")
_TAG = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{MAX_TAG_LENGTH - 1}}}")
_TAG_CHARACTERS = re.compile(r"[A-Za-z0-9_.-]+")
_DIGEST_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*")
_LOWER_HEX = re.compile(r"[0-9a-f]+")

_QUOTE_LIMIT = 80


class InvalidReference(ValueError):
    """A reference that cannot be used; ``reason`` is a sentence naming the offending part."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageReference:
    """A normalised image reference: ``tag`` is ``latest`` only when neither tag nor digest was given."""

    registry: str
    repository: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def source_image(self) -> str:
        """The ACR import API's ``sourceImage``: the digest pins the content, so it wins over a tag."""
        if self.digest is not None:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    @property
    def default_target_repository(self) -> str:
        """Where ``az acr import`` would put it: Docker Hub's ``library/nginx`` becomes ``nginx``."""
        prefix = f"{DOCKER_HUB_OFFICIAL_NAMESPACE}/"
        if self.is_docker_hub and self.repository.startswith(prefix):
            return self.repository[len(prefix):]
        return self.repository

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB


def parse_reference(text: str) -> ImageReference:
    """Parse ``[host[:port]/]path[:tag][@digest]``; Docker Hub short forms are normalised."""
    _check_text(text, "reference")
    name_and_tag, digest = _split_digest(text)
    host, path, tag = _split_name(name_and_tag)
    registry = _normalise_host(host) if host is not None else None
    _check_path(path, "repository")
    if tag is not None:
        _check_tag(tag, text)
    if digest is not None:
        _check_digest(digest)
    return _with_defaults(registry, path, tag, digest)


# A repository in the target registry (an untaggedTargetRepositories entry), as `parse_repository` checked it.
Repository = NewType("Repository", str)


@dataclass(frozen=True)
class TargetTag:
    """A targetTags entry, parsed (`parse_target_tag`): a repository and a tag in the target registry. Its
    `str` is the `repo:tag` ACR's import API takes."""

    repository: Repository
    tag: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}"


def parse_target_tag(text: str) -> TargetTag:
    """Parse an ACR ``targetTags`` entry ``repo:tag``: the target registry is chosen elsewhere, so a host
    is refused (a first component with ``.`` or ``:`` or ``localhost`` counts as one), and so is a digest."""
    _check_text(text, "target tag")
    if "@" in text:
        raise InvalidReference(f"target tag must not contain a digest, only repo:tag: {_quote(text)}")
    _refuse_host(text, "target tag")
    path, separator, tag = text.rpartition(":")
    if not separator or "/" in tag:
        path, separator = text, ""
    _check_path(path, "target repository")
    if not separator:
        raise InvalidReference(f"target tag needs a tag, as repo:tag: {_quote(text)}")
    _check_tag(tag, text)
    _check_name_length(path)
    return TargetTag(Repository(path), tag)


def parse_repository(text: str) -> Repository:
    """Parse a bare repository path (ACR ``untaggedTargetRepositories``): no host, tag or digest."""
    _check_text(text, "repository")
    if "@" in text:
        raise InvalidReference(f"repository must not contain a digest: {_quote(text)}")
    _refuse_host(text, "repository")
    if ":" in text:
        raise InvalidReference(f"repository must not contain a tag: {_quote(text)}")
    _check_path(text, "repository")
    _check_name_length(text)
    return Repository(text)


def canonical_registry_host(host: str) -> str:
    """``host[:port]`` validated and lowercased, Docker Hub aliases as ``docker.io``: the form allowlists
    compare (shared/core/policy.py). Raises InvalidReference naming what is wrong."""
    return _canonical_registry(host)


def _with_defaults(registry: str | None, path: str, tag: str | None, digest: str | None) -> ImageReference:
    """The one place Docker's defaults apply: no host or a Docker Hub alias is ``docker.io``, a single
    component there is an official image under ``library/``, and no tag or digest means ``latest``."""
    if registry is None or registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"{DOCKER_HUB_OFFICIAL_NAMESPACE}/{path}"
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    _check_name_length(f"{registry}/{path}")
    return ImageReference(registry=registry, repository=path, tag=tag, digest=digest)


def _check_text(text: object, what: str) -> None:
    """Refuse what could never be a reference before the grammar sees it, without echoing huge input."""
    if not isinstance(text, str):
        raise InvalidReference(f"{what} must be a string, got {type(text).__name__}")
    if not text:
        raise InvalidReference(f"{what} is empty")
    if len(text) > MAX_INPUT_LENGTH:
        raise InvalidReference(f"{what} is {len(text)} characters long, the limit is {MAX_INPUT_LENGTH}")
    if text != text.strip():
        raise InvalidReference(f"{what} has leading or trailing whitespace: {_quote(text)}")
    for position, character in enumerate(text):
        if character.isspace():
            raise InvalidReference(f"{what} contains whitespace at position {position}: {_quote(text)}")
        if ord(character) < 0x20 or ord(character) == 0x7F:
            raise InvalidReference(
                f"{what} contains a control character (U+{ord(character):04X}) at position {position}")
        if ord(character) > 0x7F:
            raise InvalidReference(
                f"{what} contains a non-ASCII character (U+{ord(character):04X}) at position {position}: "
                f"{_quote(text)}")
    after_scheme = text.partition("://")[2] or text
    at, slash = after_scheme.find("@"), after_scheme.find("/")
    if 0 <= at < slash:
        raise InvalidReference(
            f"{what} must not carry credentials (user:password@host); name a credential set instead")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        raise InvalidReference(
            f"{what} must not start with a scheme such as {_quote(scheme + '://')}; write {_quote(rest)}")


def _split_digest(text: str) -> tuple[str, str | None]:
    if text.count("@") > 1:
        raise InvalidReference(f"reference has more than one '@': {_quote(text)}")
    name_and_tag, separator, digest = text.partition("@")
    if not separator:
        return text, None
    if not digest:
        raise InvalidReference(f"'@' must be followed by a digest such as sha256:<64 hex>: {_quote(text)}")
    if not name_and_tag:
        raise InvalidReference(f"reference has a digest but no repository: {_quote(text)}")
    return name_and_tag, digest


def names_registry(text: str) -> bool:
    """Whether a reference starts with a registry host (Docker's rule), e.g. to qualify a bare name."""
    first, slash, _ = text.partition("/")
    return bool(slash) and _looks_like_host(first)


def _split_name(name_and_tag: str) -> tuple[str | None, str, str | None]:
    """Split ``[host/]path[:tag]``; the first component is a host only if it contains ``.`` or ``:`` or
    is ``localhost`` (Docker's rule), and a tag's ``:`` is the last one, after the last ``/``."""
    first, slash, rest = name_and_tag.partition("/")
    if slash and _looks_like_host(first):
        host, remainder = first, rest
        if not remainder or remainder.startswith(":"):
            raise InvalidReference(f"reference names registry {_quote(host)} but no repository")
    else:
        host, remainder = None, name_and_tag
    path, tag = _split_tag(remainder)
    if not slash and _names_only_a_host(path):
        raise InvalidReference(
            f"reference names only a registry host, no repository: {_quote(name_and_tag)} "
            f"(write host/repository[:tag])")
    return host, path, tag


def _split_tag(name: str) -> tuple[str, str | None]:
    colon = name.rfind(":")
    if colon < 0 or "/" in name[colon:]:
        return name, None
    return name[:colon], name[colon + 1:]


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def _names_only_a_host(name: str) -> bool:
    """``localhost:5000`` or ``reg.io`` alone; ``nginx:1:2`` is a bad repository, not a host ``nginx``."""
    host_name = name.partition(":")[0]
    if not ("." in host_name or host_name == "localhost" or name.startswith("[")):
        return False
    try:
        _normalise_host(name)
    except InvalidReference:
        return False
    return True


def _refuse_host(text: str, what: str) -> None:
    first, slash, _ = text.partition("/")
    if slash and _looks_like_host(first):
        raise InvalidReference(f"{what} must not name a registry host ({_quote(first)}); "
                               f"the target registry is chosen separately")


def _normalise_host(host: str) -> str:
    """Lowercase and validate ``host[:port]``; Docker Hub aliases stay as given (defaults map them)."""
    if not isinstance(host, str):
        raise InvalidReference(f"registry host must be a string, got {type(host).__name__}")
    if not host:
        raise InvalidReference("registry host is empty")
    if "/" in host:
        raise InvalidReference(f"registry host must be host[:port], without scheme or path: {_quote(host)}")
    lowered = host.lower()
    if lowered.startswith("["):
        name, port = _split_bracketed(lowered, host)
    else:
        name, separator, port = lowered.partition(":")
        if ":" in port:
            raise InvalidReference(
                f"registry host has more than one ':' (IPv6 needs brackets): {_quote(host)}")
        port = port if separator else None
        name = _checked_host_name(name, host)
    if port is None:
        return name
    return f"{name}:{_checked_port(port, host)}"


def _canonical_registry(host: str) -> str:
    normal = _normalise_host(host)
    return DOCKER_HUB if normal in DOCKER_HUB_ALIASES else normal


def _split_bracketed(lowered: str, original: str) -> tuple[str, str | None]:
    close = lowered.find("]")
    if close < 0:
        raise InvalidReference(f"registry host has '[' without ']': {_quote(original)}")
    literal = lowered[1:close]
    try:
        address = ipaddress.IPv6Address(literal)
    except ValueError:
        raise InvalidReference(f"registry host {_quote(original)} is not a valid IPv6 address") from None
    after = lowered[close + 1:]
    if after and not after.startswith(":"):
        raise InvalidReference(f"registry host has text after ']' that is not a port: {_quote(original)}")
    return f"[{address.compressed}]", (after[1:] if after else None)


def _checked_host_name(name: str, original: str) -> str:
    if not name:
        raise InvalidReference(f"registry host has an empty name: {_quote(original)}")
    if len(name) > MAX_HOST_LENGTH:
        raise InvalidReference(
            f"registry host is {len(name)} characters long, the limit is {MAX_HOST_LENGTH}")
    labels = name.split(".")
    if _is_all_numeric(name):
        try:
            ipaddress.IPv4Address(name)
        except ValueError:
            raise InvalidReference(f"registry host {_quote(original)} is not a valid IPv4 address") from None
        return name
    for label in labels:
        if not label:
            raise InvalidReference(f"registry host has an empty label: {_quote(original)}")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidReference(
                f"registry host label {_quote(label)} is longer than {MAX_LABEL_LENGTH} characters")
        if not _DNS_LABEL.fullmatch(label):
            raise InvalidReference(f"registry host label {_quote(label)} must be letters, digits "
                                   f"and inner '-': {_quote(original)}")
    return name


def _is_all_numeric(name: str) -> bool:
    return all(label.isdigit() for label in name.split("."))


def _checked_port(port: str, original: str) -> str:
    if not port:
        raise InvalidReference(f"registry port is empty: {_quote(original)}")
    if not _PORT.fullmatch(port):
        raise InvalidReference(f"registry port {_quote(port)} must be digits")
    if len(port) > 1 and port.startswith("0"):
        raise InvalidReference(f"registry port {_quote(port)} must not have leading zeros")
    if not 1 <= int(port) <= 65535:
        raise InvalidReference(f"registry port {port} is out of range 1..65535")
    return port


def _check_path(path: str, what: str) -> None:
    if not path:
        raise InvalidReference(f"{what} is empty")
    if path.lower() != path:
        raise InvalidReference(f"{what} must be lowercase: {_quote(path)}")
    components = path.split("/")
    for index, component in enumerate(components):
        if component:
            _check_path_component(component, what)
        elif index == len(components) - 1:
            raise InvalidReference(f"{what} must not end with '/': {_quote(path)}")
        elif index == 0:
            raise InvalidReference(f"{what} must not start with '/': {_quote(path)}")
        else:
            raise InvalidReference(f"{what} has an empty path component ('//'): {_quote(path)}")


def _check_path_component(component: str, what: str) -> None:
    if _PATH_COMPONENT.fullmatch(component):
        return
    if not _PATH_CHARACTERS.fullmatch(component):
        bad = next(c for c in component if not _PATH_CHARACTERS.fullmatch(c))
        raise InvalidReference(
            f"{what} path component {_quote(component)} contains {_quote(bad)}; "
            f"allowed are lowercase letters, digits, '.', '_' and '-'")
    if not (component[0].isalnum() and component[-1].isalnum()):
        raise InvalidReference(
            f"{what} path component {_quote(component)} must start and end with a lowercase letter or digit")
    runs = re.findall(r"[._-]+", component)
    bad = next((run for run in runs if not _VALID_SEPARATOR.fullmatch(run)), "")
    raise InvalidReference(
        f"{what} path component {_quote(component)} has the separator {_quote(bad)}; "
        f"allowed are '.', '_', '__' or a run of '-'")


def is_tag(text: str) -> bool:
    """Whether `text` is a valid tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`), as the distribution spec has it."""
    return isinstance(text, str) and _TAG.fullmatch(text) is not None


def _check_tag(tag: str, text: str) -> None:
    if not tag:
        raise InvalidReference(f"tag is empty (nothing after ':'): {_quote(text)}")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidReference(
            f"tag is {len(tag)} characters long, the limit is {MAX_TAG_LENGTH}: {_quote(tag)}")
    if _TAG.fullmatch(tag):
        return
    if not _TAG_CHARACTERS.fullmatch(tag):
        bad = next(c for c in tag if not _TAG_CHARACTERS.fullmatch(c))
        raise InvalidReference(
            f"tag {_quote(tag)} contains {_quote(bad)}; allowed are letters, digits, '_', '.' and '-'")
    raise InvalidReference(f"tag {_quote(tag)} must start with a letter, digit or '_'")


def _check_digest(digest: str) -> None:
    algorithm, colon, encoded = digest.partition(":")
    if not colon or not algorithm or not encoded:
        raise InvalidReference(f"digest must be algorithm:hex, as in sha256:<64 hex>: {_quote(digest)}")
    expected = DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        shown = _quote(algorithm) if _DIGEST_ALGORITHM.fullmatch(algorithm) else "in digest " + _quote(digest)
        raise InvalidReference(
            f"unsupported digest algorithm {shown}; use sha256 (64 lowercase hex digits) "
            f"or sha512 (128 lowercase hex digits)")
    if not _LOWER_HEX.fullmatch(encoded):
        raise InvalidReference(
            f"{algorithm} digest must be {expected} lowercase hex digits (0-9, a-f): {_quote(digest)}")
    if len(encoded) != expected:
        raise InvalidReference(f"{algorithm} digest must be {expected} lowercase hex digits, "
                               f"got {len(encoded)}: {_quote(digest)}")


def _check_name_length(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"name is {len(name)} characters long, the limit is {MAX_NAME_LENGTH}: {_quote(name)}")


def _quote(part: str) -> str:
    """Quote for a message: escaped so it cannot forge log lines, cut so it cannot flood them."""
    if len(part) > _QUOTE_LIMIT:
        part = part[: _QUOTE_LIMIT - 3] + "..."
    return json.dumps(part)
