"""One synthesis for the whole session, exactly as ``make infra-check`` and the cdk CLI do
it: ``python app.py`` in a child process, here with no network at all where the machine
lets us make a network namespace, so that a download at synthesis would fail the run.

It writes where the cdk CLI does, infra/cdk.out/ (emptied first): the main test suite
reads those templates to check the containers against the backend's own Settings and
command line (tests/test_deploy_files.py), which infra/.venv cannot import."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

INFRA = Path(__file__).resolve().parents[1]
IMAGE_TAG = "offline-check"
ENVIRONMENTS = ("staging", "production")


@dataclass
class Assembly:
    outdir: Path
    offline: bool  # synthesized inside a network namespace with no interface up

    def template(self, stack: str) -> dict:
        return json.loads((self.outdir / f"{stack}.template.json").read_text())

    def manifest(self) -> dict:
        return json.loads((self.outdir / "manifest.json").read_text())


def _no_network_prefix() -> list[str]:
    """``unshare -rn``: a new user and network namespace, only a loopback that is down."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


@pytest.fixture(scope="session")
def assembly() -> Assembly:
    outdir = INFRA / "cdk.out"
    shutil.rmtree(outdir, ignore_errors=True)
    prefix = _no_network_prefix()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDK_", "AWS_"))} | {
        "CDK_OUTDIR": str(outdir),
        "CDK_CONTEXT_JSON": json.dumps({"imageTag": IMAGE_TAG}),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    result = subprocess.run(
        [*prefix, sys.executable, "app.py"], cwd=INFRA, env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, f"synthesis failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return Assembly(outdir, offline=bool(prefix))


@pytest.fixture(scope="session")
def cdk_context() -> dict:
    return json.loads((INFRA / "cdk.json").read_text())["context"]


@pytest.fixture(params=ENVIRONMENTS, scope="session")
def env_name(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def env_config(cdk_context, env_name) -> dict:
    return cdk_context["spacetime:environments"][env_name]


@pytest.fixture(scope="session")
def template(assembly, env_name) -> dict:
    """The environment's template as JSON: most assertions read it directly."""
    return assembly.template(f"SpaceTime-{env_name}")
