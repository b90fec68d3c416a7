"""The API as a whole: OpenAPI covers every endpoint; bad input is never a 500."""

from __future__ import annotations

import httpx

from console.server.app import ROUTERS, create_app


def test_openapi_describes_every_endpoint(tmp_path):
    app = create_app(tmp_path / "o.db")
    spec = app.openapi()
    routes = {(method.lower(), route.path) for router in ROUTERS for route in router.routes for method in route.methods}
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert routes and routes <= documented
    assert {"/api/systemusers", "/api/v2/protect/push", "/device/v1/enroll"} <= set(spec["paths"])


HOSTILE_BODIES = [
    b"not json",
    b"[]",
    b"null",
    b'{"userId": 5, "resource": ["x"]}',
    b'{"searchFilter": "x"}',
    b'{"exclusionDays": 1e309}',
    b'{"code": "' + b"9" * 5000 + b'"}',
    '{"username": "\ud800"}'.encode("utf-8", "surrogatepass"),
]
ENDPOINTS = [
    ("POST", "/api/systemusers"),
    ("POST", "/api/search/systemusers"),
    ("PUT", "/api/systemusers/{u}"),
    ("POST", "/api/systemusers/{u}/resetmfa"),
    ("PATCH", "/api/v2/protect/settings"),
    ("POST", "/api/v2/protect/push"),
    ("POST", "/api/v2/protect/totp/verify"),
    ("POST", "/device/v1/enroll"),
    ("PATCH", "/api/v2/users/{u}/pushendpoints/x"),
]


async def test_malformed_requests_get_clear_errors_not_500(backend):
    async with httpx.AsyncClient(base_url=backend.url, headers={"x-api-key": backend.admin_key}) as http:
        user_id = (await http.get("/api/systemusers", params={"limit": 1})).json()["results"][0]["_id"]
        for method, path in ENDPOINTS:
            for body in HOSTILE_BODIES:
                response = await http.request(
                    method,
                    path.format(u=user_id),
                    content=body,
                    headers={"content-type": "application/json", "If-Match": "*"},
                )
                assert response.status_code < 500, (method, path, body[:40], response.text)
                if (method, path, body) != ("POST", "/api/systemusers/{u}/resetmfa", b"null"):  # no body is valid
                    assert response.status_code >= 400 and response.json()["message"], (method, path, body[:40])
        for params in ({"skip": "x"}, {"limit": "1e9"}, {"since": "soon"}, {"status": "happy"}, {"optedOut": "maybe"}):
            for path in ("/api/v2/protect/pushattempts", "/api/v2/protect/privacy/devices", "/api/systemusers"):
                response = await http.get(path, params=params)
                assert response.status_code in (200, 400, 422), (path, params, response.text)
                if response.status_code != 200:
                    assert next(iter(params)) in response.json()["message"]
        assert (await http.get("/api/nowhere")).json()["message"]
