"""The served OpenAPI document describes every endpoint, and the committed copy is current."""

import httpx
import yaml

from backend.api.app import create_app
from backend.run.cli import openapi_yaml
from tests.helpers import COMMITTED_OPENAPI


def test_committed_openapi_is_current():
    assert COMMITTED_OPENAPI.read_text() == openapi_yaml(create_app()), (
        "run `make openapi` and commit backend/api/openapi.yml"
    )


def test_served_document_lists_every_route(api_url):
    served = httpx.get(f"{api_url}/openapi.json").json()
    assert served == yaml.safe_load(COMMITTED_OPENAPI.read_text())
    expected = {
        ("/randomize", "post"),
        ("/randomize/{token}/status", "get"),
        ("/randomize/{token}/result", "get"),
        ("/even-sum", "post"),
        ("/even-sum/{token}/status", "get"),
        ("/even-sum/{token}/result", "get"),
        ("/even-sum/uploads", "post"),
        ("/even-sum/uploads/{upload_id}/complete", "post"),
        ("/tasks/{token}", "get"),
        ("/tasks/{token}/report", "get"),
        ("/healthz", "get"),
        ("/metrics", "get"),
    }
    documented = {(path, method) for path, item in served["paths"].items() for method in item}
    assert expected <= documented
    for path, method in expected:
        responses = served["paths"][path][method]["responses"]
        if "{token}" in path or "uploads" in path:
            assert "404" in responses, f"{method} {path} does not document its 404"
    assert "image/png" in served["paths"]["/randomize"]["post"]["requestBody"]["content"]
    assert {"text/plain", "application/json"} <= set(served["paths"]["/even-sum"]["post"]["requestBody"]["content"])
    assert httpx.get(f"{api_url}/docs").status_code == 200
