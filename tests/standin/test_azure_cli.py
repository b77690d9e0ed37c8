"""A client we did not write agrees with the ACR stand-in: the real Azure CLI runs `az acr import` against it.

The CLI lives in its own virtual environment (`.venv-az`, made by `make az-cli`, part of `make test`), logs in
with the stack's managed-identity endpoint and talks to a custom cloud whose Resource Manager is the stand-in.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from dev import layout, oci, seed

AZ = layout.REPO_ROOT / ".venv-az" / "bin" / "az"


@pytest.fixture(scope="module")
def az(stack, tmp_path_factory):
    if not AZ.exists():
        pytest.fail(f"the Azure CLI is not installed at {AZ}: run `make az-cli`")
    config = tmp_path_factory.mktemp("az-config")
    env = {**os.environ, **layout.stack_env(), "AZURE_CONFIG_DIR": str(config), "AZURE_CORE_COLLECT_TELEMETRY": "no",
           "AZURE_CORE_ONLY_SHOW_ERRORS": "true"}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(AZ), *args], env=env, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
        return done

    arm = f"{layout.ARM_ENDPOINT}/"
    run("cloud", "register", "-n", "LocalStack", "--endpoint-resource-manager", arm,
        "--endpoint-active-directory", layout.AAD_ENDPOINT,
        "--endpoint-active-directory-resource-id", layout.ARM_RESOURCE,
        "--suffix-acr-login-server-endpoint", ".azurecr.io")
    run("cloud", "set", "-n", "LocalStack")
    run("login", "--identity")
    run("account", "set", "-s", layout.SUB_A)
    return run


def test_az_acr_import_copies_every_platform_into_the_stand_in(az, stack):
    tag = f"az-{uuid.uuid4().hex[:6]}"
    az("acr", "import", "-n", layout.TARGET_ACR.name, "--source", "docker.io/library/hello-world:latest",
       "--image", f"hello-world:{tag}")
    target = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), "hello-world", tag)
    assert target.digest == stack.digest("docker.io", "library/hello-world", "latest")
    assert len(target.platforms) == 4


def test_az_acr_import_reports_a_no_force_conflict_like_acr(az):
    tag = f"az-{uuid.uuid4().hex[:6]}"
    az("acr", "import", "-n", layout.TARGET_ACR.name, "--source", "docker.io/library/nginx:1.27", "--image", f"n:{tag}")
    clash = az("acr", "import", "-n", layout.TARGET_ACR.name, "--source", "docker.io/library/nginx:latest",
               "--image", f"n:{tag}", check=False)
    assert clash.returncode == 1
    assert f"Tag n:{tag} already exists in target registry" in clash.stderr


def test_az_acr_import_from_a_same_subscription_acr_uses_its_resource_id(az, stack, control):
    tag = f"az-{uuid.uuid4().hex[:6]}"
    az("acr", "import", "-n", layout.TARGET_ACR.name, "--source",
       f"{layout.SOURCE_ACR.login_server}/aci-helloworld:latest", "--image", f"aci:{tag}")
    target = oci.inspect_image(seed.admin_client(layout.TARGET_ACR.login_server), "aci", tag)
    assert target.digest == stack.digest(layout.SOURCE_ACR.login_server, "aci-helloworld", "latest")
    [post] = [r for r in control.requests() if r["path"].endswith("/importImage")]
    assert post["body"]["source"] == {"resourceId": layout.SOURCE_ACR.resource_id,
                                      "sourceImage": "aci-helloworld:latest"}
