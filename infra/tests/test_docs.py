"""docs/deployment-aws.md's numbers are the stack's: the instance types and counts its cost
model prices are the ones cdk.json deploys, and the monthly figures follow from its prices."""

import re

import pytest

from spacetime_infra.workers import ROOT_VOLUME_GIB
from tests.cfn import INFRA_ROOT

DOC = (INFRA_ROOT.parent / "docs" / "deployment-aws.md").read_text()
HOURS_A_MONTH = 730
GP3_PER_GB_MONTH = 0.08
ENVIRONMENTS = ("production", "staging")  # the order of the baseline table's columns
TIMES = "\N{MULTIPLICATION SIGN}"  # the doc counts instances as "2 <this> r7i.xlarge"


def section(title: str) -> str:
    return DOC.split(f"\n{title}\n", 1)[1].split("\n#", 1)[0]


def hourly_prices() -> dict[str, float]:
    """{instance type: $ an hour} of the price table."""
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^\| ([a-z0-9]+\.[a-z0-9]+) \([^|]*\| \$([\d.]+) per hour", DOC, re.MULTILINE)
    }


def baseline_row(label: str) -> dict[str, tuple[str, int]]:
    """{environment: (what, $ a month)} of one row of the always-on baseline table."""
    costs = section("### Costs (us-east-1, the sizes in `infra/cdk.json`)")
    (row,) = [line for line in costs.splitlines() if line.startswith(f"| {label} |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    return {env: (cells[1 + 2 * i], int(cells[2 + 2 * i])) for i, env in enumerate(ENVIRONMENTS)}


@pytest.mark.parametrize(
    "lane, label", [("interactive", "interactive workers, On-Demand"), ("bulk", "bulk workers, On-Demand base")]
)
def test_the_cost_model_prices_the_workers_the_stack_deploys(cdk_context, lane, label):
    prices = hourly_prices()
    for env, (what, dollars) in baseline_row(label).items():
        pool = cdk_context["spacetime:environments"][env]["workers"][lane]
        count, instance_type = pool["onDemandBase"], pool["instanceTypes"][0]
        assert what.startswith(f"{count} {TIMES} {instance_type} "), (env, what)
        expected = count * (prices[instance_type] * HOURS_A_MONTH + ROOT_VOLUME_GIB * GP3_PER_GB_MONTH)
        assert abs(dollars - expected) <= 1, (env, dollars, expected)


def test_the_cost_model_prices_the_redis_and_fargate_sizes_deployed(cdk_context):
    for env, (what, _) in baseline_row("ElastiCache").items():
        assert what == f"2 {TIMES} {cdk_context['spacetime:environments'][env]['redisNodeType']}"
    for label, key in (("API, Fargate", "api"), ("dispatchers, Fargate", "dispatchers")):
        for env, (what, _) in baseline_row(label).items():
            service = cdk_context["spacetime:environments"][env][key]
            size = f"{service['cpu'] / 1024:g} vCPU, {service['memoryMib'] / 1024:g} GB"
            assert what == f"{service['minTasks']} {TIMES} {size}", (label, env)


def test_every_instance_type_the_stack_deploys_has_a_price(cdk_context):
    prices = hourly_prices()
    for env in cdk_context["spacetime:environments"].values():
        for pool in env["workers"].values():
            assert pool["instanceTypes"][0] in prices
    assert "m7i.2xlarge" not in DOC  # the instance of the old model, which the stack never ran


def test_the_scaling_targets_in_the_doc_are_productions(cdk_context):
    production = cdk_context["spacetime:environments"]["production"]
    scaling = section("### Scaling and alarms")
    for lane in ("interactive", "bulk"):
        target = production["workers"][lane]["backlogPerWorker"]
        assert re.search(rf"^\| {lane} workers \|.*`backlogPerWorker` \({target}\) \|$", scaling, re.MULTILINE), lane
    waits = production["alarms"]["queueWaitP95Seconds"]
    assert f"{waits['randomize']} s images, {waits['even-sum']} s even-sum" in scaling
