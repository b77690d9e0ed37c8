"""The image-reference grammar, as users write references: one table of cases, then the helpers."""

import hashlib
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.core.reference import (
    ImageReference,
    InvalidReference,
    Repository,
    TargetTag,
    parse_reference,
    parse_repository,
    parse_target_tag,
)

D256 = "sha256:" + hashlib.sha256(b"layer").hexdigest()
D512 = "sha512:" + hashlib.sha512(b"layer").hexdigest()


def ok(text: str, canonical: str, source_image: str, target: str) -> object:
    return pytest.param(text, (canonical, source_image, target), id=f"ok:{text[:60]}")


def bad(text: str, reason: str, case_id: str | None = None) -> object:
    return pytest.param(text, reason, id=f"bad:{case_id or text[:60]}")


CASES = [
    # Docker Hub short forms and aliases
    ok("nginx", "docker.io/library/nginx:latest", "library/nginx:latest", "nginx"),
    ok("nginx:1.27", "docker.io/library/nginx:1.27", "library/nginx:1.27", "nginx"),
    ok("nginx:5000", "docker.io/library/nginx:5000", "library/nginx:5000", "nginx"),
    ok("library/nginx", "docker.io/library/nginx:latest", "library/nginx:latest", "nginx"),
    ok("docker.io/nats", "docker.io/library/nats:latest", "library/nats:latest", "nats"),
    ok("docker.io/library/hello-world:latest", "docker.io/library/hello-world:latest",
       "library/hello-world:latest", "hello-world"),
    ok("index.docker.io/library/x", "docker.io/library/x:latest", "library/x:latest", "x"),
    ok("registry-1.docker.io/x", "docker.io/library/x:latest", "library/x:latest", "x"),
    ok("registry.hub.docker.com/bitnami/redis:7", "docker.io/bitnami/redis:7", "bitnami/redis:7",
       "bitnami/redis"),
    ok("DOCKER.IO/nginx", "docker.io/library/nginx:latest", "library/nginx:latest", "nginx"),
    ok("bitnami/redis:7", "docker.io/bitnami/redis:7", "bitnami/redis:7", "bitnami/redis"),
    ok("tensorflow/tensorflow:2.16.1-gpu", "docker.io/tensorflow/tensorflow:2.16.1-gpu",
       "tensorflow/tensorflow:2.16.1-gpu", "tensorflow/tensorflow"),
    ok("library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest", "a/b"),
    ok("docker.io:443/nginx", "docker.io:443/nginx:latest", "nginx:latest", "nginx"),
    # other registries
    ok("mcr.microsoft.com/windows/servercore:ltsc2022", "mcr.microsoft.com/windows/servercore:ltsc2022",
       "windows/servercore:ltsc2022", "windows/servercore"),
    ok("mcr.microsoft.com/dotnet/aspnet", "mcr.microsoft.com/dotnet/aspnet:latest", "dotnet/aspnet:latest",
       "dotnet/aspnet"),
    ok("registry.contoso.com/team/app:v1", "registry.contoso.com/team/app:v1", "team/app:v1", "team/app"),
    ok("MyRegistry.AzureCR.io/app:V1", "myregistry.azurecr.io/app:V1", "app:V1", "app"),
    ok("quay.io/library/x", "quay.io/library/x:latest", "library/x:latest", "library/x"),
    ok("localhost:5000/a", "localhost:5000/a:latest", "a:latest", "a"),
    ok("localhost/a", "localhost/a:latest", "a:latest", "a"),
    ok("localhost/library/a", "localhost/library/a:latest", "library/a:latest", "library/a"),
    ok("LOCALHOST:5000/a", "localhost:5000/a:latest", "a:latest", "a"),
    ok("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c", "a/b:c", "a/b"),
    ok("10.0.0.1/a", "10.0.0.1/a:latest", "a:latest", "a"),
    ok("[::1]:5000/a", "[::1]:5000/a:latest", "a:latest", "a"),
    ok("[0:0:0:0:0:0:0:1]/a", "[::1]/a:latest", "a:latest", "a"),
    ok("reg:1/a", "reg:1/a:latest", "a:latest", "a"),
    ok("reg.io:65535/a", "reg.io:65535/a:latest", "a:latest", "a"),
    ok("my-reg.example.com/a", "my-reg.example.com/a:latest", "a:latest", "a"),
    ok("a.b.c.d.e/x/y/z", "a.b.c.d.e/x/y/z:latest", "x/y/z:latest", "x/y/z"),
    # digests, with and without tag
    ok(f"myregistry.azurecr.io/app@{D256}", f"myregistry.azurecr.io/app@{D256}", f"app@{D256}", "app"),
    ok(f"reg.io/app:1@{D256}", f"reg.io/app:1@{D256}", f"app@{D256}", "app"),
    ok(f"nginx@{D256}", f"docker.io/library/nginx@{D256}", f"library/nginx@{D256}", "nginx"),
    ok(f"nginx:1.27@{D256}", f"docker.io/library/nginx:1.27@{D256}", f"library/nginx@{D256}", "nginx"),
    ok(f"reg.io/app@{D512}", f"reg.io/app@{D512}", f"app@{D512}", "app"),
    ok(f"localhost:5000/a@{D256}", f"localhost:5000/a@{D256}", f"a@{D256}", "a"),
    # path component separators
    ok("a__b", "docker.io/library/a__b:latest", "library/a__b:latest", "a__b"),
    ok("a--b", "docker.io/library/a--b:latest", "library/a--b:latest", "a--b"),
    ok("a---b/c_d/e-f", "docker.io/a---b/c_d/e-f:latest", "a---b/c_d/e-f:latest", "a---b/c_d/e-f"),
    ok("reg.io/my.app", "reg.io/my.app:latest", "my.app:latest", "my.app"),
    ok("reg.io/a.b.c_d-e", "reg.io/a.b.c_d-e:latest", "a.b.c_d-e:latest", "a.b.c_d-e"),
    ok("0/1", "docker.io/0/1:latest", "0/1:latest", "0/1"),
    # tags
    ok("reg.io/a:_x", "reg.io/a:_x", "a:_x", "a"),
    ok("reg.io/a:V1.2-rc_3", "reg.io/a:V1.2-rc_3", "a:V1.2-rc_3", "a"),
    ok("reg.io/a:" + "t" * 128, "reg.io/a:" + "t" * 128, "a:" + "t" * 128, "a"),
    ok("reg.io/a:latest", "reg.io/a:latest", "a:latest", "a"),
    # whole-input rules
    bad("", "reference is empty"),
    bad(" nginx", "leading or trailing whitespace"),
    bad("nginx ", "leading or trailing whitespace", "trailing space"),
    bad("ngi nx", "whitespace at position 3"),
    bad("nginx:1\t2", "whitespace at position 7"),
    bad("nginx\x00", "control character (U+0000)"),
    bad("ng\x1binx", "control character (U+001B) at position 2"),
    bad("ngïnx", "non-ASCII character (U+00EF) at position 2"),
    bad("https://reg.io/a", 'scheme such as "https://"; write "reg.io/a"'),
    bad("docker://nginx", 'scheme such as "docker://"'),
    bad("a" * 1025, "reference is 1025 characters long, the limit is 1024", "1025 chars"),
    # repository
    bad("UPPER/repo", 'repository must be lowercase: "UPPER/repo"'),
    bad("Nginx", 'repository must be lowercase: "Nginx"'),
    bad("reg.io/Library/Nginx", 'repository must be lowercase: "Library/Nginx"'),
    bad("a._b", 'path component "a._b" has the separator "._"'),
    bad("a__b._c", 'separator "._"'),
    bad("a___b", 'separator "___"'),
    bad("a-_b", 'separator "-_"'),
    bad("reg.io/a/../b", 'path component ".." must start and end'),
    bad("-a", 'path component "-a" must start and end'),
    bad("a_", 'path component "a_" must start and end'),
    bad("reg.io/a+b", 'path component "a+b" contains "+"'),
    bad("reg.io/a:b/c", 'path component "a:b" contains ":"'),
    bad("nginx/", "repository must not end with '/'"),
    bad("reg.io/a/", "repository must not end with '/'", "host path trailing slash"),
    bad("reg.io/a//b", "empty path component ('//')"),
    bad("reg.io//a", "repository must not start with '/'"),
    bad("/nginx", "repository must not start with '/'", "leading slash"),
    bad("reg.io/" + "a" * 249, "name is 256 characters long, the limit is 255"),
    bad("x/" + "a" * 245, "name is 257 characters long, the limit is 255", "hub name over 255"),
    # registry host and port
    bad("localhost:5000", 'names only a registry host, no repository: "localhost:5000"'),
    bad("myregistry.azurecr.io", "names only a registry host"),
    bad("127.0.0.1:5000", "names only a registry host", "ip port no repo"),
    bad("reg.io/", 'names registry "reg.io" but no repository'),
    bad("localhost:5000/:v1", "but no repository"),
    bad("reg:0/a", "port 0 is out of range 1..65535"),
    bad("reg:65536/a", "port 65536 is out of range 1..65535"),
    bad("reg:/a", "registry port is empty"),
    bad("reg:http/a", 'port "http" must be digits'),
    bad("reg:05000/a", "must not have leading zeros"),
    bad("reg_x.io/a", 'label "reg_x" must be letters, digits'),
    bad("-reg.io/a", 'label "-reg" must be letters'),
    bad("reg..io/a", "empty label"),
    bad("reg.io./a", "empty label", "trailing dot host"),
    bad("a" * 64 + ".io/x", "longer than 63 characters"),
    bad("256.0.0.1/a", "not a valid IPv4 address"),
    bad("1.2.3/a", "not a valid IPv4 address", "three octets"),
    bad("::1/a", "more than one ':' (IPv6 needs brackets)"),
    bad("[::g]/a", "not a valid IPv6 address"),
    bad("[::1/a", "'[' without ']'"),
    # tag
    bad("nginx:", 'tag is empty (nothing after \':\'): "nginx:"'),
    bad("reg.io/a:", "tag is empty"),
    bad("reg.io/a:" + "t" * 129, "tag is 129 characters long, the limit is 128"),
    bad("reg.io/a:.x", 'tag ".x" must start with a letter, digit or'),
    bad("reg.io/a:-x", 'tag "-x" must start'),
    bad("reg.io/a:x+y", 'tag "x+y" contains "+"'),
    bad("nginx:1:2", 'path component "nginx:1" contains ":"'),
    bad("localhost:5000:v1", 'names only a registry host, no repository: "localhost:5000:v1"'),
    bad("[::1]:5000", "names only a registry host", "ipv6 no repo"),
    # digest
    bad("nginx@", "'@' must be followed by a digest"),
    bad(f"a@{D256}@{D256}", "more than one '@'"),
    bad(f"@{D256}", "has a digest but no repository"),
    bad("nginx@" + D256[:-1], "sha256 digest must be 64 lowercase hex digits, got 63", "63 hex"),
    bad("nginx@" + D256 + "0", "sha256 digest must be 64 lowercase hex digits, got 65", "65 hex"),
    bad("nginx@sha256:" + D256[7:].upper(), "sha256 digest must be 64 lowercase hex digits (0-9"),
    bad("nginx@" + D512[:-2], "sha512 digest must be 128 lowercase hex digits, got 126"),
    bad("nginx@md5:" + hashlib.md5(b"x").hexdigest(), 'unsupported digest algorithm "md5"; use sha256 (64'),
    bad("nginx@SHA256:" + "a" * 64, 'unsupported digest algorithm in digest "SHA256:'),
    bad("nginx@sha256", "digest must be algorithm:hex"),
    bad("nginx@sha256:", "digest must be algorithm:hex", "empty hex"),
    bad("nginx@latest", "digest must be algorithm:hex", "tag after at"),
]


def test_the_table_is_large_and_ids_are_unique():
    ids = [case.id for case in CASES]
    assert len(CASES) >= 80
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_reference(text: str, expected: tuple[str, str, str] | str):
    if isinstance(expected, str):
        with pytest.raises(InvalidReference) as caught:
            parse_reference(text)
        assert expected in caught.value.reason
        assert str(caught.value) == caught.value.reason
        return
    reference = parse_reference(text)
    assert (str(reference), reference.source_image, reference.default_target_repository) == expected
    assert parse_reference(str(reference)) == reference


def test_fields_and_defaults():
    assert parse_reference("nginx") == ImageReference("docker.io", "library/nginx", "latest", None)
    digest_only = parse_reference(f"reg.io/app@{D256}")
    assert (digest_only.tag, digest_only.digest) == (None, D256)
    both = parse_reference(f"reg.io/app:1@{D256}")
    assert (both.tag, both.digest) == ("1", D256)
    assert parse_reference("index.docker.io/x").is_docker_hub
    assert not parse_reference("localhost/x").is_docker_hub
    assert not parse_reference("quay.io/library/x").is_docker_hub


def test_invalid_reference_is_a_value_error():
    with pytest.raises(ValueError, match="lowercase"):
        parse_reference("Nginx")


def test_non_string_input_is_refused_with_its_type():
    with pytest.raises(InvalidReference, match="must be a string, got int"):
        parse_reference(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", [
    "user:s3cr3t-pw@reg.io/app:1",
    "https://user:s3cr3t-pw@reg.io/app",
    "s3cr3t-pw@reg.io/app@" + D256,
])
def test_credentials_in_a_reference_are_refused_without_echoing_them(text: str):
    with pytest.raises(InvalidReference) as caught:
        parse_reference(text)
    assert "must not carry credentials" in caught.value.reason
    assert "s3cr3t" not in caught.value.reason


def test_over_long_input_is_not_echoed():
    with pytest.raises(InvalidReference) as caught:
        parse_reference("a" * 5000)
    assert "a" * 20 not in caught.value.reason


def test_quoted_parts_are_truncated_and_escaped():
    with pytest.raises(InvalidReference) as caught:
        parse_reference("reg.io/" + "a" * 300)
    assert len(caught.value.reason) < 200
    with pytest.raises(InvalidReference) as caught:
        parse_reference("reg.io/a\u2028b")
    assert "\u2028" not in caught.value.reason
    with pytest.raises(InvalidReference) as caught:
        parse_reference('reg.io/a"b')
    assert '"a\\"b"' in caught.value.reason


def test_names_at_the_length_limit_are_accepted():
    assert len(str(parse_reference("reg.io/" + "a" * 248)).split(":")[0]) == 255
    assert parse_reference("x/" + "a" * 243).repository == "x/" + "a" * 243


# --- targetTags entries --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("nginx:1.27", ("nginx", "1.27")),
    ("library/nginx:latest", ("library/nginx", "latest")),
    ("team/app/api:v1_2", ("team/app/api", "v1_2")),
    ("my.app:V1", ("my.app", "V1")),
    ("localhost:5000", ("localhost", "5000")),
])
def test_target_tag(text: str, expected: tuple[str, str]):
    assert parse_target_tag(text) == TargetTag(Repository(expected[0]), expected[1])
    assert str(parse_target_tag(text)) == text


@pytest.mark.parametrize(("text", "reason"), [
    ("nginx", "needs a tag, as repo:tag"),
    ("team/app", "needs a tag"),
    ("nginx:", "tag is empty"),
    ("myregistry.azurecr.io/app:v1", 'must not name a registry host ("myregistry.azurecr.io")'),
    ("localhost:5000/app:v1", "must not name a registry host"),
    ("localhost/app:v1", "must not name a registry host"),
    (f"app@{D256}", "must not contain a digest"),
    (f"app:v1@{D256}", "must not contain a digest"),
    ("App:v1", 'target repository must be lowercase: "App"'),
    ("a._b:v1", 'target repository path component "a._b"'),
    ("app:" + "t" * 129, "tag is 129 characters long"),
    ("app:-x", 'tag "-x" must start'),
    ("a:b/c:d", 'must not name a registry host ("a:b")'),
    ("app/a:b/c", 'path component "a:b" contains ":"'),
    ("", "target tag is empty"),
    ("app :v1", "whitespace"),
    ("a" * 256 + ":v1", "name is 256 characters long"),
])
def test_target_tag_refused(text: str, reason: str):
    with pytest.raises(InvalidReference) as caught:
        parse_target_tag(text)
    assert reason in caught.value.reason


# --- untaggedTargetRepositories entries ----------------------------------------------------------


@pytest.mark.parametrize("text", ["nginx", "library/nginx", "team/app/api", "my.app", "a__b", "a--b"])
def test_repository(text: str):
    assert parse_repository(text) == text


@pytest.mark.parametrize(("text", "reason"), [
    ("nginx:1", "must not contain a tag"),
    (f"nginx@{D256}", "must not contain a digest"),
    ("reg.io/nginx", 'must not name a registry host ("reg.io")'),
    ("localhost/nginx", "must not name a registry host"),
    ("Nginx", "repository must be lowercase"),
    ("nginx/", "must not end with '/'"),
    ("a//b", "empty path component"),
    ("a._b", 'path component "a._b"'),
    ("", "repository is empty"),
    ("a" * 256, "name is 256 characters long"),
])
def test_repository_refused(text: str, reason: str):
    with pytest.raises(InvalidReference) as caught:
        parse_repository(text)
    assert reason in caught.value.reason


# --- properties ----------------------------------------------------------------------------------

_component = st.from_regex(r"[a-z0-9]{1,5}(?:(?:[._]|__|-{1,3})[a-z0-9]{1,5}){0,2}", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_host = st.sampled_from(["", "docker.io/", "Index.Docker.io/", "localhost:5000/", "reg.io/", "10.1.2.3:80/",
                         "[::1]/", "MyRegistry.AzureCR.io/"])


@given(_host, st.lists(_component, min_size=1, max_size=3), st.none() | _tag, st.booleans())
def test_canonical_form_parses_back_to_the_same_reference(host, components, tag, with_digest):
    assume(host or "." not in components[0])  # a dotted first component is a registry host
    text = host + "/".join(components) + (f":{tag}" if tag else "") + (f"@{D256}" if with_digest else "")
    reference = parse_reference(text)
    assert parse_reference(str(reference)) == reference
    assert reference.repository.endswith("/".join(components))
    assert reference.registry == reference.registry.lower()


@given(st.text(alphabet=string.printable + "é\u2028@:/", max_size=60))
def test_arbitrary_text_either_parses_or_says_why(text):
    try:
        reference = parse_reference(text)
    except InvalidReference as error:
        assert error.reason
        return
    assert parse_reference(str(reference)) == reference
