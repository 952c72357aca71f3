"""The served OpenAPI document describes every endpoint, and the committed copy is current."""

import httpx
import yaml

from backend.api.app import create_app
from backend.core.kinds import KINDS
from backend.run.cli import openapi_yaml
from tests.paths import COMMITTED_OPENAPI


def test_committed_openapi_is_current():
    assert COMMITTED_OPENAPI.read_text() == openapi_yaml(create_app()), (
        "run `make openapi` and commit backend/api/openapi.yml"
    )


def kind_routes() -> set[tuple[str, str]]:
    """The routes every declared kind gets: its door, status and result (and direct uploads for files)."""
    routes = set()
    for kind in KINDS.values():
        routes |= {(f"/{kind.name}", "post"), (f"/{kind.name}/{{token}}/status", "get")}
        routes.add((f"/{kind.name}/{{token}}/result", "get"))
        if kind.in_blocks:
            routes |= {(f"/{kind.name}/uploads", "post"), (f"/{kind.name}/uploads/{{upload_id}}/complete", "post")}
    return routes


def test_served_document_lists_every_route(api_url):
    served = httpx.get(f"{api_url}/openapi.json").json()
    assert served == yaml.safe_load(COMMITTED_OPENAPI.read_text())
    expected = {*kind_routes(), ("/tasks/{token}", "get"), ("/tasks/{token}/report", "get")}
    expected |= {("/healthz", "get"), ("/livez", "get"), ("/readyz", "get"), ("/metrics", "get")}
    documented = {(path, method) for path, item in served["paths"].items() for method in item}
    assert expected <= documented
    for path, method in expected:
        responses = served["paths"][path][method]["responses"]
        if "{token}" in path or "uploads" in path:
            assert "404" in responses, f"{method} {path} does not document its 404"
    assert "image/png" in served["paths"]["/randomize"]["post"]["requestBody"]["content"]
    assert {"text/plain", "application/json"} <= set(served["paths"]["/even-sum"]["post"]["requestBody"]["content"])
    assert httpx.get(f"{api_url}/docs").status_code == 200
