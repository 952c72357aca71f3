"""The app synthesizes offline, with nothing looked up, built or downloaded, and passes
cdk-nag (during synthesis) and cfn-lint."""

import json
import re
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from tests.conftest import ENVIRONMENTS, INFRA


def test_every_stack_is_synthesized(assembly):
    artifacts = assembly.manifest()["artifacts"]
    stacks = {name for name, a in artifacts.items() if a["type"] == "aws:cloudformation:stack"}
    assert stacks == {"SpaceTime-images", *(f"SpaceTime-{env}" for env in ENVIRONMENTS)}


def test_nothing_is_looked_up(assembly):
    """A *_lookup or an AZ lookup would be recorded as missing context (and need an account)."""
    assert "missing" not in assembly.manifest()


def test_synthesis_needed_no_network(assembly):
    if not assembly.offline:
        pytest.skip("no network namespace here (unshare -rn failed): synthesis ran with the network")
    assert assembly.offline


def test_no_docker_image_is_built(assembly):
    """Images come from ECR by tag; a Docker asset would need Docker at synthesis."""
    for path in assembly.outdir.glob("*.assets.json"):
        assets = json.loads(path.read_text())
        assert not assets.get("dockerImages"), f"{path.name} builds images"
        for asset in assets.get("files", {}).values():
            assert asset["source"]["path"].endswith(".template.json"), f"{path.name}: unexpected file asset"


def test_cfn_lint_is_clean(assembly):
    templates = sorted(str(p) for p in assembly.outdir.glob("*.template.json"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), *templates],
        cwd=INFRA,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_ignored_cfn_lint_rule_says_why():
    lines = (INFRA / ".cfnlintrc.yaml").read_text().splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"\s*- [EWI]\d{4}", line)]
    assert rules, "no ignored rule: then drop this test and the file's ignore list"
    for i in rules:
        assert lines[i - 1].strip().startswith("#"), f"{lines[i].strip()} has no comment above it"


def test_each_cdk_nag_acknowledgement_has_a_reason(assembly, env_name):
    metadata = json.loads((assembly.outdir / f"SpaceTime-{env_name}.metadata.json").read_text())
    acknowledged = {
        rule: reason
        for entries in metadata.values()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule, reason in entry["data"].items()
        if "AwsSolutions-" in rule  # the CDK's own CloudFormation checks acknowledge some too
    }
    assert acknowledged, "the stack acknowledges nothing: then nag.py is dead code"
    for rule, reason in acknowledged.items():
        assert len(reason.split()) >= 8, f"{rule}: {reason!r} is not a reason"


def test_cdk_nag_fails_synthesis_on_a_finding(tmp_path):
    """The plugin is live: an unacknowledged finding (a bucket without TLS) stops synthesis."""
    app = cdk.App(outdir=str(tmp_path))
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    stack = cdk.Stack(app, "Probe")
    s3.Bucket(stack, "Plain")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for r in report["pluginReports"] for v in r.get("violations", [])}
    assert "AwsSolutions-S10" in rules
