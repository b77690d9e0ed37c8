"""Writes the hostile corpus: `messages.jsonl` (bad import requests) and `events.jsonl` (bad Event Grid events).

`python -m tests.hostile.generate` rewrites both files; `tests/imports/test_hostile_input.py` checks they match this
script, so a reviewer reads the rules here and the cases there. Each line is one case:
`{"name", "text" | "bytes" (base64 of raw bytes that are not text), "field"}`, where `field` is the field the
rejection must name (`(message)` for the body as a whole; null: any). Secrets below are planted, never real.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

from dev import layout

HERE = Path(__file__).resolve().parent
MESSAGES = HERE / "messages.jsonl"
EVENTS = HERE / "events.jsonl"
PLANTED_PASSWORD = "planted-inline-pass-0b7d41"  # tests/imports/test_secret_hygiene.py scans for it
MESSAGE = "(message)"
OK = {"source": "nginx:1.27", "targetTags": ["hostile:ok"]}


def _case(name: str, body: object, field: str) -> dict:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"name": name, "text": text, "field": field}


def broken_bodies() -> Iterator[dict]:
    texts = {
        "empty": "", "blank": "   \n\t", "truncated object": '{"source": "nginx"',
        "trailing comma": '{"source": "nginx",}', "single quotes": "{'source': 'nginx'}",
        "comment": '{"source": "nginx" /* x */}',
        "two objects": '{"source": "nginx"}{"source": "nginx"}', "unquoted key": "{source: 1}",
        "bare word": "nginx", "xml": "<source>nginx</source>", "yaml": "source: nginx",
        "null": "null", "array": '["nginx"]', "number": "42", "string": '"nginx"', "true": "true",
        "empty array": "[]", "nested arrays": "[" * 50 + "]" * 50,
        "two BOMs then JSON": "\ufeff\ufeff{\"source\": \"nginx\"}",
        "unterminated string": '{"source": "ngin', "lone brace": "}", "deep nesting": "[" * 100_000,
        "escaped garbage": '{"source": "\\x41"}', "control char in JSON": '{"source": "a\x01b"}',
    }
    for name, text in texts.items():
        yield _case(f"body: {name}", text, MESSAGE)
    b64 = {
        "bad padding": "eyJzb3VyY2UiOiAibmdpbngifQ=", "invalid alphabet": "eyJzb3VyY2UiOi!!bmdpbngifQ==",
        "base64 of text": base64.b64encode(b"just text").decode(), "base64 of array": base64.b64encode(b"[1]").decode(),
        "base64 of latin-1": base64.b64encode(b"\xff\xfe{}").decode(),
        "double base64": base64.b64encode(base64.b64encode(json.dumps(OK).encode())).decode(),
        "url-safe alphabet": base64.urlsafe_b64encode(b'{"source": "nginx??>>"}').decode().replace("=", ""),
        "base64 of truncated JSON": base64.b64encode(b'{"source": "ng').decode(),
        "base64 with spaces inside": "eyJzb3Vy Y2UiOiAi bmdpbngifQ==", "only padding": "====",
    }
    for name, text in b64.items():
        yield _case(f"base64: {name}", text, MESSAGE)
    for name, raw in {"latin-1": b'{"source": "caf\xe9"}', "lone continuation": b"\x80\x81",
                      "utf-16": '{"source": "nginx"}'.encode("utf-16"), "NUL bytes": b"\x00" * 16,
                      "overlong": b'{"source": "\xc0\xaf"}'}.items():
        yield {"name": f"bytes: {name}", "bytes": base64.b64encode(raw).decode(), "field": MESSAGE}


WRONG_VALUES = {"null": None, "number": 1, "float": 1.5, "boolean": True, "array": ["x"], "object": {"a": 1}}
FIELDS = {  # field -> the right JSON type, so a value of that type is not "wrong"
    "source": str, "sourceRegistry": str, "credential": str, "target": str, "targetTags": list,
    "untaggedTargetRepositories": list, "mode": str, "id": str, "version": int, "username": str,
    "password": str, "retry": dict, "operation": dict,
}


def wrong_types() -> Iterator[dict]:
    for field, right in FIELDS.items():
        for label, value in WRONG_VALUES.items():
            if isinstance(value, right) and not (right is int and isinstance(value, bool)):
                value = "text"
            doc = {**OK, field: value}
            if field == "source":
                doc.pop("targetTags")
            yield _case(f"type: {field} {label}", doc, field)
    for label, value in {"number": 7, "null": None, "object": {}, "array": [[]]}.items():
        yield _case(f"type: targetTags item {label}", {**OK, "targetTags": [value]}, "targetTags[0]")
        yield _case(f"type: untagged item {label}", {**OK, "untaggedTargetRepositories": [value]},
                    "untaggedTargetRepositories[0]")


def huge_values() -> Iterator[dict]:
    yield _case("huge: message over 64 KiB", {**OK, "id": "big", "pad": "x" * 70_000}, MESSAGE)
    yield _case("huge: source 10 KB", {"source": "a" * 10_000}, "source")
    yield _case("huge: tag 200 chars", {"source": "nginx:" + "t" * 200}, "source")
    yield _case("huge: id 129 chars", {**OK, "id": "i" * 129}, "id")
    yield _case("huge: 5,000 target tags", {**OK, "targetTags": [f"r:t{i}" for i in range(5000)]}, "targetTags")
    yield _case("huge: repeated target tags", {**OK, "targetTags": ["r:t"] * 3}, "targetTags")
    yield _case("huge: deeply nested source", {"source": json.loads("[" * 500 + "]" * 500)}, "source")
    yield _case("huge: deeply nested retry", {**OK, "retry": json.loads('{"a":' * 300 + "1" + "}" * 300)},
                "retry")
    yield _case("huge: NaN source", '{"source": NaN}', "source")
    yield _case("huge: 1e308 version", '{"source": "nginx", "version": 1e308}', "version")
    yield _case("huge: big integer version", '{"source": "nginx", "version": ' + "9" * 400 + "}", "version")
    yield _case("huge: 5,000-digit version (past Python's int limit)", '{"source": "nginx", "version": ' + "9" * 5000
                + "}", "version")
    yield _case("huge: 2,000 unknown fields", {**OK, **{f"f{i}": i for i in range(2_000)}}, "f0")
    yield _case("huge: 3,000 unknown fields that are not names (each described: a reason of 160 KB, uncut)",
                json.dumps({**OK, **{f"f-{i}": 0 for i in range(3_000)}}, separators=(",", ":")), None)
    yield _case("huge: 50 bad target tags of 500 characters", {"source": "nginx:1.27", "targetTags": [
        f"Bad:{i}:" + "x" * 490 for i in range(50)]}, "targetTags[0]")


ODD_TEXT = {
    "NUL": "\u0000", "tab": "\t", "newline": "\n", "carriage return": "\r", "escape": "\u001b[31m",
    "DEL": "\u007f", "right-to-left override": "\u202e", "zero-width space": "\u200b", "BOM": "\ufeff",
    "fullwidth": "\uff4e\uff47\uff49\uff4e\uff58", "Cyrillic o": "\u043e", "combining acute": "e\u0301",
    "emoji": "\U0001f433", "lone high surrogate": "\ud800", "lone low surrogate": "\udfff",
    "noncharacter U+FFFF": "\uffff", "noncharacter U+FFFE": "\ufffe", "line separator": "\u2028",
    "replacement char": "\ufffd", "non-breaking space": "\u00a0",
}


def odd_text() -> Iterator[dict]:
    for label, odd in ODD_TEXT.items():
        yield _case(f"unicode: source {label}", {"source": f"ngin{odd}x:1"}, "source")
        yield _case(f"unicode: tag {label}", {**OK, "targetTags": [f"web:v{odd}1"]}, "targetTags[0]")
        yield _case(f"unicode: id {label}", {**OK, "id": f"req{odd}1"}, "id")
        yield _case(f"unicode: mode {label}", {**OK, "mode": f"Force{odd}"}, "mode")


BAD_REFERENCES = [
    "../etc/passwd", "library/../nginx", "nginx/..", "./nginx", "nginx@", "nginx@sha256:", "nginx@sha256:abc",
    "nginx@md5:" + "a" * 32, "nginx@sha256:" + "g" * 64, "nginx@@sha256:" + "a" * 64, "user@docker.io/nginx",
    "https://docker.io/nginx", "docker://nginx", "oci://nginx", "http://mcr.microsoft.com/x", "file:///etc/passwd",
    "ngi nx", " nginx", "nginx ", "nginx:1 .27", "Library/Nginx", "NGINX", "docker.io/Library/nginx",
    "nginx:", "nginx::1", ":1.27", "nginx:-1", "nginx:.x", "nginx:" + "x" * 129, "//nginx", "/nginx", "nginx/",
    "docker.io//nginx", "-nginx", "nginx-", "_nginx", "ngin___x", "a" * 300, "nginx:1.27@sha256:short",
    "docker.io:99999/nginx", "docker.io:port/nginx", "[::1]/nginx", "nginx?x=1", "nginx#frag", "nginx;rm -rf /",
    "$(id)", "`id`", "nginx\\x", "*", "docker.io/*", "%2e%2e/nginx", "nginx%00", "",
]
FORBIDDEN_SOURCES = [
    "ghcr.io/owner/image:1", "quay.io/coreos/etcd:v3", "localhost:5000/x:1", "127.0.0.1:5000/x:1",
    "169.254.169.254/latest:1", "evil.com/nginx:1", "myregistry.azurecr.io.evil.com/x:1", "azurecr.io/x:1",
    "a.b.azurecr.io/x:1", "registry.contoso.com.evil/x:1", "xn--dcker-rta.io/nginx:1", "gcr.io/distroless/base:1",
    "public.ecr.aws/nginx/nginx:1", "docker.io.evil.com/nginx:1", "10.0.0.1/x:1",
]


def references() -> Iterator[dict]:
    for index, ref in enumerate(BAD_REFERENCES):
        yield _case(f"reference {index}: source {ref[:40]!r}", {"source": ref}, "source")
        yield _case(f"reference {index}: target tag {ref[:40]!r}", {**OK, "targetTags": [ref]}, "targetTags[0]")
    for ref in BAD_REFERENCES[:30]:
        yield _case(f"reference: untagged {ref[:40]!r}", {**OK, "untaggedTargetRepositories": [ref]},
                    "untaggedTargetRepositories[0]")
    for ref in FORBIDDEN_SOURCES:
        yield _case(f"allowlist: source {ref}", {"source": ref, "targetTags": ["x:1"]}, "source")


def policy() -> Iterator[dict]:
    other = layout.OTHER_SUB_ACR.resource_id
    for name, target in {"another subscription's ACR": other, "source ACR": layout.SOURCE_ACR.resource_id,
                         "unknown ACR": other.replace("sourceregistry", "elsewhere"),
                         "not a resource id": "myregistry.azurecr.io", "storage account":
                         other.replace("Microsoft.ContainerRegistry/registries", "Microsoft.Storage/storageAccounts"),
                         "path traversal": layout.TARGET_ACR.resource_id + "/../../x",
                         "empty": ""}.items():
        yield _case(f"allowlist: target {name}", {**OK, "target": target}, "target")
    yield _case("secret: inline password refused", {**OK, "username": "u", "password": PLANTED_PASSWORD}, "password")
    yield _case("secret: inline username alone", {**OK, "username": "u"}, "username")
    yield _case("secret: password beside a credential set",
                {**OK, "credential": "dockerhub", "password": PLANTED_PASSWORD}, "password")
    yield _case("secret: password in an unknown field", {**OK, "secret": PLANTED_PASSWORD}, "secret")
    yield _case("secret: broken JSON holding a password", '{"source": "nginx", "password": "' + PLANTED_PASSWORD,
                MESSAGE)
    for name in ("nosuchset", "DOCKERHUB;x", "../contoso", "", "a" * 65):
        yield _case(f"credential: {name[:20]!r}", {**OK, "credential": name}, "credential")
    yield _case("credential: set sent to another registry", {"source": "registry.contoso.com/team/app:1",
                                                              "targetTags": ["x:1"], "credential": "dockerhub"},
                "credential")
    for name in ("Source", "__proto__", "source ", "targetTag", "force", "constructor", "retry_after", ""):
        plain = name.isidentifier() or not name  # other names are described, not echoed (they may hold anything)
        yield _case(f"unknown field {name!r}", {**OK, name: "x"}, (name or MESSAGE) if plain else None)
    for mode in ("force", "NOFORCE", "", "IfChanged ", "Overwrite"):
        yield _case(f"mode {mode!r}", {**OK, "mode": mode}, "mode")
    yield _case("version 2", {**OK, "version": 2}, "version")
    yield _case("no targets at all", {**OK, "targetTags": [], "untaggedTargetRepositories": []}, "targetTags")
    yield _case("sourceRegistry names another host", {"source": "docker.io/library/nginx:1",
                                                      "sourceRegistry": layout.SOURCE_ACR.resource_id},
                "source")
    for name, rid in {"subscription id": "/subscriptions/x", "resource group id":
                      f"/subscriptions/{layout.SUB_A}/resourceGroups/rg", "provider only":
                      f"/subscriptions/{layout.SUB_A}/providers/Microsoft.ContainerRegistry"}.items():
        yield _case(f"sourceRegistry: {name}", {**OK, "sourceRegistry": rid}, "sourceRegistry")
        yield _case(f"target: {name}", {**OK, "target": rid}, "target")
    for name, retry in {"negative attempt": {"attempt": -1, "firstAttemptAt": "2026-01-01T00:00:00+00:00"},
                        "string attempt": {"attempt": "1", "firstAttemptAt": "2026-01-01T00:00:00+00:00"},
                        "bad time": {"attempt": 1, "firstAttemptAt": "yesterday"},
                        "no UTC offset": {"attempt": 1, "firstAttemptAt": "2026-01-01T00:00:00"}}.items():
        yield _case(f"forged retry: {name}", {**OK, "retry": retry}, "retry")
    yield _case("forged retry: extra field", {**OK, "retry": {"attempt": 1, "firstAttemptAt": "2026-01-01T00:00:00Z",
                                                              "x": 1}}, "x")
    for name, operation in {"no url": {"startedAt": "2026-01-01T00:00:00+00:00", "checks": 1},
                            "url not a string": {"url": 5, "startedAt": "2026-01-01T00:00:00+00:00", "checks": 1},
                            "negative checks": {"url": "https://x/y", "startedAt": "2026-01-01T00:00:00+00:00",
                                                "checks": -5},
                            "bad time": {"url": "https://x/y", "startedAt": "soon", "checks": 1},
                            "no UTC offset": {"url": "https://x/y", "startedAt": "2026-01-01T00:00:00",
                                              "checks": 1}}.items():
        yield _case(f"forged operation: {name}", {**OK, "operation": operation}, "operation")


INT_FIELDS = {"version": '{{"source": "nginx", "version": {n}}}',
              "retry.attempt": '{{"source": "nginx", "retry": {{"attempt": {n}, "firstAttemptAt": '
                               '"2026-01-01T00:00:00+00:00"}}}}',
              "operation.checks": '{{"source": "nginx", "operation": {{"url": "https://x/y", '
                                  '"startedAt": "2026-01-01T00:00:00+00:00", "checks": {n}}}}}',
              "source": '{{"source": {n}}}', "targetTags[0]": '{{"source": "nginx", "targetTags": [{n}]}}',
              "x": '{{"source": "nginx", "x": {n}}}', "mode": '{{"source": "nginx", "mode": {n}}}'}
NUMBERS = {"4,301 digits": "1" * 4301, "50,000 digits": "7" * 60_000, "negative 5,000 digits":
           "-" + "9" * 5000, "2^53 + 1": str(2 ** 53 + 1), "2^64": str(2 ** 64), "20 digits": "1" * 20,
           "1e309": "1e309", "-1e309": "-1e309", "1e99999": "1e99999", "NaN": "NaN", "Infinity": "Infinity",
           "-Infinity": "-Infinity", "1.0 where an integer": "1.0", "1e0 where an integer": "1e0",
           "long fraction": "1." + "0" * 5000}


def numbers() -> Iterator[dict]:
    """Numbers `json.loads` refuses (past 4,300 digits it raises ValueError), reads as non-standard (NaN),
    turns into infinity, or reads inexactly; in every field that may hold one and in some that may not."""
    float_only = ("1.0 where an integer", "1e0 where an integer", "long fraction")
    for field, template in INT_FIELDS.items():
        for label, literal in NUMBERS.items():
            if label in float_only and field not in ("version", "retry.attempt", "operation.checks"):
                continue
            text = template.format(n=literal[:50_000])
            yield _case(f"number: {field} {label}", text, field)
    for label, literal in NUMBERS.items():
        encoded = base64.b64encode(INT_FIELDS["version"].format(n=literal[:40_000]).encode()).decode()
        yield _case(f"number: base64 version {label}", encoded, "version")


def duplicates() -> Iterator[dict]:
    """The same key twice: parsers disagree on which one counts, so a validator and an importer could read
    different requests from one body."""
    for field, (first, second) in {"source": ('"nginx:1.27"', '"evil.example/x:1"'), "id": ('"a"', '"b"'),
                                   "target": ('"x"', '"y"'), "password": ('"a"', f'"{PLANTED_PASSWORD}"'),
                                   "mode": ('"NoForce"', '"Force"'), "targetTags": ('["a:1"]', '["b:1"]'),
                                   "credential": ('"dockerhub"', '"contoso"')}.items():
        pair = f'"{field}": {first}, "{field}": {second}'
        body = f'{{"source": "nginx:1.27", {pair}}}' if field != "source" else f"{{{pair}}}"
        yield _case(f"duplicate: {field}", body, field)
    yield _case("duplicate: key in retry", '{"source": "nginx", "retry": {"attempt": 1, "attempt": 2, '
                '"firstAttemptAt": "2026-01-01T00:00:00+00:00"}}', "retry")
    yield _case("duplicate: escaped spelling of the same key", '{"source": "nginx", "sourc\u0065": "evil/x:1"}',
                "source")
    yield _case("duplicate: base64", base64.b64encode(b'{"source": "a", "source": "b"}').decode(), "source")


UNSAFE_IDS = {
    "trailing newline": "req-1\n", "trailing CRLF": "req-1\r\n", "leading newline": "\nreq-1",
    "slash": "a/b", "backslash": "a\\b", "hash": "a#b", "question mark": "a?b", "NUL": "a\u0000b",
    "tab": "a\tb", "escape": "a\u001b[2Jb", "bell": "a\u0007", "DEL": "a\u007f", "C1 NEL": "a\u0085b",
    "CSI C1": "a\u009b31m", "bidi override": "\u202ereq", "zero-width joiner": "re\u200dq",
    "fullwidth": "\uff52\uff45\uff51", "Cyrillic": "r\u0435q", "129 characters": "i" * 129,
    "1,025 characters": "i" * 1025, "dot first": ".req", "dash first": "-req", "underscore first": "_req",
    "only dots": "..", "percent-encoded slash": "a%2Fb", "space": "a b", "quote": "a'b", "double quote":
    'a"b', "userinfo": f"u:{PLANTED_PASSWORD}@host", "URL": "https://example.com/x", "colon": "a:b",
    "empty": "", "line separator": "a\u2028b", "BOM": "\ufeffreq", "combining": "re\u0301q",
}


def request_ids() -> Iterator[dict]:
    """Ids that must not become a table key, a URL segment or a log field: each is refused naming `id`, and
    the rejection is recorded under the queue message id."""
    for label, text in UNSAFE_IDS.items():
        yield _case(f"id: {label}", {**OK, "id": text}, "id")
    yield _case("id: the password itself", {**OK, "id": "x-" + PLANTED_PASSWORD, "username": "u",
                                           "password": PLANTED_PASSWORD}, "id")
    yield _case("id: not a string but an object", {**OK, "id": {"$ne": None}}, "id")
    yield _case("id: a list", {**OK, "id": ["a", "b"]}, "id")
    yield _case("id: base64 body with newline id", base64.b64encode(
        json.dumps({**OK, "id": "req\n"}).encode()).decode(), "id")


USERINFO_FORMS = {
    "user:password@host": "user:{pw}@registry.contoso.com/team/app:1",
    "password@host": "{pw}@registry.contoso.com/team/app:1",
    "https URL with userinfo": "https://user:{pw}@registry.contoso.com/team/app:1",
    "docker URL with userinfo": "docker://user:{pw}@docker.io/library/nginx:1",
    "user:password@host:port": "user:{pw}@registry.contoso.com:443/team/app:1",
    "@ inside password": "user:{pw}@x@registry.contoso.com/app:1",
    "bare user:password@host": "user:{pw}@registry.contoso.com",
    "resource-id shaped": "https://user:{pw}@management.azure.com/subscriptions/x",
}
REFERENCE_FIELDS = {"source": "source", "sourceRegistry": "sourceRegistry", "target": "target",
                    "targetTags": "targetTags[0]", "untaggedTargetRepositories": "untaggedTargetRepositories[0]",
                    "credential": "credential", "mode": "mode", "username": "username", "registry": "registry"}


def userinfo() -> Iterator[dict]:
    """Credentials written into a reference, in every field that takes one (and some that do not): refused,
    and then recorded without the password anywhere (tests/imports/test_secret_hygiene.py scans for it)."""
    for form, template in USERINFO_FORMS.items():
        value = template.format(pw=PLANTED_PASSWORD)
        for field, named in REFERENCE_FIELDS.items():
            doc = {"source": "nginx:1.27", "targetTags": ["hostile:ok"]}
            doc[field] = [value] if field in ("targetTags", "untaggedTargetRepositories") else value
            yield _case(f"userinfo: {field} {form}", doc, named)
    yield _case("userinfo: source equal to the inline password", {"source": PLANTED_PASSWORD, "username": "u",
                                                                  "password": PLANTED_PASSWORD}, "password")
    yield _case("userinfo: password as an unknown field's name", {**OK, PLANTED_PASSWORD: 1}, None)
    yield _case("userinfo: password-like query in a reference", {"source": f"nginx?password={PLANTED_PASSWORD}"},
                "source")
    yield _case("userinfo: password in broken JSON", '{"source": "u:' + PLANTED_PASSWORD + '@docker.io/x', MESSAGE)


CONTROL = {"escape (CSI)": "\u001b[31m", "OSC title": "\u001b]0;pwned\u0007", "bell": "\u0007",
           "carriage return": "\r", "backspace": "\b", "form feed": "\f", "C1 CSI": "\u009b", "DEL": "\u007f",
           "bidi override": "\u202e", "bidi isolate": "\u2066", "left-to-right mark": "\u200e"}
STRING_FIELDS = {"source": "source", "sourceRegistry": "sourceRegistry", "target": "target",
                 "credential": "credential", "untaggedTargetRepositories": "untaggedTargetRepositories[0]",
                 "username": "username", "mode": "mode"}


def control_characters() -> Iterator[dict]:
    """Terminal escapes and bidi controls in every string field, and as an unknown field's name: refused, and
    printed escaped by `acr-import status/list` (tests/core/test_producer_rules.py)."""
    for label, odd in CONTROL.items():
        for field, named in STRING_FIELDS.items():
            value = f"a{odd}b"
            doc = {"source": "nginx:1.27", "targetTags": ["hostile:ok"]}
            doc[field] = [value] if field == "untaggedTargetRepositories" else value
            yield _case(f"control: {field} {label}", doc, named)
        yield _case(f"control: unknown field named {label}", {"source": "nginx:1.27", f"x{odd}": 1}, None)


NEAR_VALID = {  # label: (document, the field its rejection names)
    "mode lower case": ({**OK, "mode": "force"}, "mode"), "version as string": ({**OK, "version": "1"}, "version"),
    "targetTags a string": ({**OK, "targetTags": "hostile:ok"}, "targetTags"),
    "tag with trailing space": ({**OK, "targetTags": ["hostile:ok "]}, "targetTags[0]"),
    "id with trailing newline": ({**OK, "id": "near-1\n"}, "id"),
    "source with trailing newline": ({"source": "nginx:1.27\n"}, "source"),
    "credential with newline": ({**OK, "credential": "dockerhub\n"}, "credential"),
    "retry as a producer sends it": ({**OK, "retry": {"attempt": 1}}, "retry"),
    "operation without a time": ({**OK, "operation": {"url": "https://attacker.example/op", "checks": 1}},
                                 "operation"),
    "Source capitalised": ({"Source": "nginx:1.27"}, "Source"),
    "digest too short": ({"source": "nginx@sha256:abc"}, "source"),
    "no targets": ({**OK, "targetTags": []}, "targetTags"),
    "target by login server": ({**OK, "target": "myregistry.azurecr.io"}, "target"),
    "sourceRegistry by login server": ({**OK, "sourceRegistry": "mysourceregistry.azurecr.io"}, "sourceRegistry"),
    "BOM inside id": ({**OK, "id": "\ufeffnear"}, "id"),
    "tag over 128": ({**OK, "targetTags": ["r:" + "t" * 129]}, "targetTags[0]"),
    "version 1.5": ({**OK, "version": 1.5}, "version"),
    "id 128 then newline": ({**OK, "id": "i" * 128 + "\n"}, "id"),
}


def near_valid() -> Iterator[dict]:
    """One thing wrong with an otherwise good request: the rejection names exactly that field."""
    for label, (doc, named) in NEAR_VALID.items():
        yield _case(f"near-valid: {label}", doc, named)


def _grid(event_type: str = "Microsoft.ContainerRegistry.ImagePushed", topic: str | None = None,
          data: object = None, **extra: object) -> dict:
    topic = topic if topic is not None else layout.SOURCE_ACR.resource_id
    if data is None:
        data = {"target": {"repository": "app", "tag": "1.0", "digest": "sha256:" + "a" * 64,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json"},
                "request": {"host": layout.SOURCE_ACR.login_server}}
    return {"id": "evt-1", "topic": topic, "subject": "app:1.0", "eventType": event_type,
            "eventTime": "2026-01-01T00:00:00Z", "dataVersion": "1.0", "data": data, **extra}


def events() -> Iterator[dict]:
    """Event Grid events written to the import queue by whoever can write to it: never an import."""
    foreign = "/subscriptions/99999999-9999-4999-8999-999999999999/resourceGroups/x/providers/" \
              "Microsoft.ContainerRegistry/registries/stranger"
    topics = {"unknown ACR": foreign, "storage account": "/subscriptions/x/resourceGroups/y/providers/"
              "Microsoft.Storage/storageAccounts/z", "empty topic": "", "URL topic": "https://evil.example/topic",
              "target registry itself": layout.TARGET_ACR.resource_id, "uppercase": foreign.upper()}
    for name, topic in topics.items():
        yield _case(f"event: from {name}", _grid(topic=topic), MESSAGE)
        yield _case(f"event: chart pushed from {name}", _grid("Microsoft.ContainerRegistry.ChartPushed", topic),
                    MESSAGE)
    for event_type in ("Microsoft.ContainerRegistry.ImageDeleted", "Microsoft.Storage.BlobCreated", "", "x" * 500,
                       "Microsoft.ContainerRegistry.ImagePushed\u0000"):
        yield _case(f"event: type {event_type[:40]!r}", _grid(event_type), MESSAGE)
    datas = {"no data": {}, "data null": "null", "data string": "pushed", "data array": [1],
             "no target": {"request": {}}, "target string": {"target": "app:1"},
             "repository with ..": {"target": {"repository": "../app", "tag": "1", "digest": "sha256:" + "a" * 64}},
             "tag with space": {"target": {"repository": "app", "tag": "1 0", "digest": "sha256:" + "a" * 64}},
             "uppercase repository": {"target": {"repository": "App", "tag": "1", "digest": "sha256:" + "a" * 64}},
             "bad digest": {"target": {"repository": "app", "tag": "1", "digest": "md5:00"}},
             "huge repository": {"target": {"repository": "a" * 5000, "tag": "1"}},
             "nested bomb": {"target": json.loads("[" * 300 + "]" * 300)}}
    for name, data in datas.items():
        yield _case(f"event: {name}", _grid(data=data if data != "null" else {"target": None}), MESSAGE)
    yield _case("event: a batch (array of events)", [_grid(), _grid(topic=foreign)], MESSAGE)
    yield _case("event: validation handshake", _grid("Microsoft.EventGrid.SubscriptionValidationEvent",
                                                      data={"validationCode": "x"}), MESSAGE)
    yield _case("event: CloudEvent from unknown source", {
        "specversion": "1.0", "id": "c1", "source": foreign, "type": "Microsoft.ContainerRegistry.ImagePushed",
        "data": {"target": {"repository": "app", "tag": "1"}}}, MESSAGE)
    yield _case("event: CloudEvent without type", {"specversion": "1.0", "id": "c2", "source": foreign}, MESSAGE)
    yield _case("event: event with inline password", _grid(password=PLANTED_PASSWORD), MESSAGE)
    yield _case("event: event with control chars", _grid(subject="app\u0000\u001b:1"), MESSAGE)


def referrer_choices() -> Iterator[dict]:
    """The `referrers` field almost right: each rejection names the exact part that is wrong."""
    signature = "application/vnd.cncf.notary.signature"
    cases = {
        "word in capitals": ("Required", "referrers"), "word with space": ("all ", "referrers"),
        "list of words": (["all"], "referrers"), "boolean": (True, "referrers"), "null": (None, "referrers"),
        "number": (0, "referrers"), "empty object": ({}, "referrers.artifactTypes"),
        "types as text": ({"artifactTypes": signature}, "referrers.artifactTypes"),
        "empty types": ({"artifactTypes": []}, "referrers.artifactTypes"),
        "type without slash": ({"artifactTypes": ["signature"]}, "referrers.artifactTypes[0]"),
        "type with newline": ({"artifactTypes": [signature + "\n"]}, "referrers.artifactTypes[0]"),
        "type with unicode": ({"artifactTypes": ["applicati\u00f6n/x"]}, "referrers.artifactTypes[0]"),
        "second type a number": ({"artifactTypes": [signature, 7]}, "referrers.artifactTypes[1]"),
        "too many types": ({"artifactTypes": [f"application/t{i}" for i in range(21)]}, "referrers.artifactTypes"),
        "required as text": ({"artifactTypes": [signature], "required": "true"}, "referrers.required"),
        "misspelt key": ({"artifactType": [signature]}, "referrers.artifactType"),
        "nested choice": ({"artifactTypes": [signature], "referrers": "all"}, "referrers.referrers"),
    }
    for label, (value, named) in cases.items():
        yield _case(f"referrers: {label}", {**OK, "referrers": value}, named)


def message_cases() -> list[dict]:
    return [*broken_bodies(), *wrong_types(), *huge_values(), *odd_text(), *references(), *policy(), *numbers(),
            *duplicates(), *request_ids(), *userinfo(), *control_characters(), *near_valid(), *referrer_choices()]


def event_cases() -> list[dict]:
    """Which field an event's rejection names depends on how the event code reads it: any named field will do."""
    cases = []
    for index, case in enumerate(events()):  # each its own event id, so each gets its own status row
        text = case["text"].replace('"id": "evt-1"', f'"id": "evt-{index}"').replace('"id": "c', f'"id": "c{index}-')
        cases.append({**case, "text": text, "field": None})
    return cases


def render(cases: list[dict]) -> str:
    return "".join(json.dumps(case) + "\n" for case in cases)


def main() -> None:
    MESSAGES.write_text(render(message_cases()))
    EVENTS.write_text(render(event_cases()))
    print(f"{len(message_cases())} messages, {len(event_cases())} events")


if __name__ == "__main__":
    main()
