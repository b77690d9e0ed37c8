"""Backup tags: the name under which a tag's previous image is kept before an import moves the tag.

BACKUP_TAG_TEMPLATE (e.g. `{tag}-backup-{date}`) names the backup; this module parses it once (when the
settings are read) and renders it per tag. Pure: the worker brings the tag, the old digest and the time.

Why each rule:
- Placeholders are `{tag}`, `{date}` (UTC YYYYMMDD), `{time}` (UTC HHMMSS) and `{digest}` (the first 12 hex
  of the old digest). `{date}` and `{digest}` give the same name to the same old image within a day, so a
  redelivery after the backup (but before the main import) makes the same backup again, never a second one.
- A template is refused when no rendering can be a tag (the distribution spec's
  `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, shared/core/reference.py `is_tag`): a literal character outside it, a
  leading `.` or `-`, literal text too long to leave room for the tag, a format spec or conversion
  (`{tag:>5}`, `{tag!r}`), an unknown placeholder, an unbalanced brace (`{{` and `}}` are literal braces,
  which no tag can hold, so they are refused too), and `{tag}` alone (the backup would be the tag moved).
- A rendering longer than 128 characters shortens each `{tag}` to a prefix plus `-` and 8 hex of the
  tag's SHA-256: always a valid tag, and two long tags that share a prefix still get different backups.
"""

from __future__ import annotations

import hashlib
import re
import string
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.core.reference import MAX_TAG_LENGTH

PLACEHOLDERS = {"tag": 0, "date": 8, "time": 6, "digest": 12}  # name -> rendered length (tag: variable)
DIGEST_HEX = 12
SHORTENED_HASH_HEX = 8
MIN_TAG_ROOM = 1 + 1 + SHORTENED_HASH_HEX  # a shortened tag: at least one character of it, "-", the hash
_LITERAL = re.compile(r"[A-Za-z0-9_.-]*")
_FIRST = re.compile(r"[A-Za-z0-9_]")


class BackupTemplateError(ValueError):
    """A template no rendering of which can be a valid tag; the message names the rule it breaks."""


@dataclass(frozen=True)
class BackupTemplate:
    """A parsed BACKUP_TAG_TEMPLATE: literal text and placeholder names, in order."""

    text: str
    parts: tuple[tuple[str, str], ...]  # ("literal", text) or ("field", name)

    @property
    def fixed_length(self) -> int:
        """Characters of every rendering besides the `{tag}`s (the other placeholders have fixed lengths)."""
        return sum(len(value) if kind == "literal" else PLACEHOLDERS[value] for kind, value in self.parts)

    @property
    def tag_count(self) -> int:
        return sum(1 for kind, value in self.parts if kind == "field" and value == "tag")

    def render(self, tag: str, old_digest: str, now: datetime) -> str:
        """The backup tag for `tag`, whose image (`old_digest`) is about to be replaced, at `now` (UTC)."""
        moment = now.astimezone(UTC)
        count = self.tag_count
        shown = tag
        if count and self.fixed_length + count * len(tag) > MAX_TAG_LENGTH:
            shown = shortened(tag, (MAX_TAG_LENGTH - self.fixed_length) // count)
        values = {"tag": shown, "date": moment.strftime("%Y%m%d"), "time": moment.strftime("%H%M%S"),
                  "digest": digest_hex(old_digest)}
        return "".join(value if kind == "literal" else values[value] for kind, value in self.parts)


def shortened(tag: str, room: int) -> str:
    """`tag` in at most `room` characters (room >= MIN_TAG_ROOM): a prefix, "-", 8 hex of its SHA-256."""
    mark = hashlib.sha256(tag.encode()).hexdigest()[:SHORTENED_HASH_HEX]
    return f"{tag[:room - 1 - SHORTENED_HASH_HEX]}-{mark}"


def digest_hex(digest: str) -> str:
    """The first 12 hex of a digest (`sha256:abc...` -> `abc...`), lower case."""
    hexes = digest.partition(":")[2] or digest
    return re.sub(r"[^0-9a-f]", "", hexes.lower())[:DIGEST_HEX].ljust(DIGEST_HEX, "0")


def parse_backup_template(text: str) -> BackupTemplate:
    """The template, or BackupTemplateError naming the rule it breaks (see the module docstring)."""
    try:
        pieces = list(string.Formatter().parse(text))
    except ValueError:
        raise BackupTemplateError("has an unbalanced brace: placeholders are {tag}, {date}, {time} and "
                                  "{digest}") from None
    parts: list[tuple[str, str]] = []
    for literal, name, spec, conversion in pieces:
        if literal:
            if not _LITERAL.fullmatch(literal):
                bad = next(c for c in literal if not _LITERAL.fullmatch(c))
                raise BackupTemplateError(f"has {bad!r} outside a placeholder: a tag holds only letters, digits, "
                                          "'_', '.' and '-'")
            parts.append(("literal", literal))
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            raise BackupTemplateError(f"has an unknown placeholder {{{name}}}: placeholders are {{tag}}, {{date}}, "
                                      "{time} and {digest}")
        if spec or conversion:
            raise BackupTemplateError(f"has a format spec or conversion in {{{name}}}: write the placeholder "
                                      "alone")
        parts.append(("field", name))
    template = BackupTemplate(text, tuple(parts))
    if not parts:
        raise BackupTemplateError("is empty")
    if parts[0][0] == "literal" and not _FIRST.fullmatch(parts[0][1][0]):
        raise BackupTemplateError("starts with '.' or '-': a tag starts with a letter, digit or '_'")
    if parts == [("field", "tag")]:
        raise BackupTemplateError("is {tag} alone: the backup would be the tag being moved; add a suffix such "
                                  "as -backup-{date}")
    room = MAX_TAG_LENGTH - template.fixed_length - template.tag_count * MIN_TAG_ROOM
    if room < 0:
        raise BackupTemplateError(f"renders too long: a tag is at most {MAX_TAG_LENGTH} characters and each "
                                  f"{{tag}} needs room for {MIN_TAG_ROOM}")
    return template
