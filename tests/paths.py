"""Where the tests' files are: the fixtures folder and the committed OpenAPI document."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


# The OpenAPI document the repository carries (make openapi); the served one must equal it.
COMMITTED_OPENAPI = REPO / "backend" / "api" / "openapi.yml"
