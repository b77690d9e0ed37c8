"""A client we did not write agrees with the ACR stand-in: the real Azure CLI runs `az acr import` against it.

The CLI lives in its own virtual environment (`.venv-az`, made by `make az-cli`, part of `make test`), logs in
with the stack's managed-identity endpoint and talks to a custom cloud whose Resource Manager is the stand-in.
"""

from __future__ import annotations

import uuid

from dev import layout, oci, seed


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
