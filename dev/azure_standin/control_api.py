"""`/_control/*`: the test-facing side of the stand-in (health, recorded requests, roles, settings,
scripted faults, reset, and the in-memory catalog when running without registries)."""

from __future__ import annotations

from dev.azure_standin.data_plane import MemoryDataPlane, SourceImage
from dev.azure_standin.http_base import Request, Response
from dev.azure_standin.world import World


def _bad(message: str) -> Response:
    return Response(400, {"error": message})


def serve_control(world: World, memory: MemoryDataPlane, request: Request) -> Response:
    if not request.client.startswith("127."):
        return Response(403, {"error": "control endpoint is loopback only"})
    name = request.path.removeprefix("/_control").strip("/")
    method = request.method
    try:
        body = request.json() or {}
    except ValueError:
        return _bad("body is not JSON")
    try:
        if name == "health" and method == "GET":
            return Response(200, {"status": "ok", "data_plane": world.setting("data_plane")})
        if name == "requests" and method == "GET":
            return Response(200, world.recorded())
        if name == "requests" and method == "DELETE":
            world.clear_recorded()
            return Response(204)
        if name == "reset" and method == "POST":
            world.reset()
            memory.clear()
            return Response(204)
        if name == "role-assignments" and method == "GET":
            return Response(200, [a.to_json() for a in world.assignments])
        if name == "role-assignments" and method == "POST":
            return Response(201, world.add_assignment(body["principalId"], body["role"], body["scope"]).to_json())
        if name == "role-assignments" and method == "DELETE":
            removed = world.remove_assignment(body["principalId"], body.get("role"), body.get("scope"))
            return Response(200, {"removed": removed})
        if name == "role-definitions" and method == "GET":
            return Response(200, world.role_definitions())
        if name == "role-definitions" and method == "POST":
            world.define_role(body["name"], list(body["actions"]), list(body.get("notActions") or []),
                              list(body.get("dataActions") or []), list(body.get("notDataActions") or []))
            return Response(201, body)
        if name == "settings" and method == "GET":
            return Response(200, dict(world.settings))
        if name == "settings" and method in ("PUT", "PATCH", "POST"):
            return Response(200, world.update_settings(body))
        if name == "faults" and method == "GET":
            return Response(200, world.faults)
        if name == "faults" and method == "POST":
            world.add_faults(body["on"], list(body["rules"]))
            return Response(204)
        if name == "authorization-outage" and method == "POST":
            world.set_authorization_outage(float(body["seconds"]), body.get("start"))
            return Response(204)
        if name == "operations" and method == "GET":
            return Response(200, [{"id": op.id, "status": op.status, "digest": op.digest, "started": op.started,
                                   "ended": op.ended,
                                   "error": op.error.envelope()["error"] if op.error else None}
                                  for op in world.operations.values()])
        if name == "images" and method == "PUT":
            memory.put(body["ref"], SourceImage(body["digest"], tuple(body.get("manifests") or [body["digest"]])))
            return Response(204)
    except (KeyError, TypeError, ValueError) as err:
        return _bad(f"bad control request: {err}")
    return Response(404, {"error": f"no control endpoint {method} /_control/{name}"})
