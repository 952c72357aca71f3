"""cdk.json's parameters are checked before anything is built: a bad value names itself."""

import copy

import pytest

from spacetime_infra.config import ConfigError, load_environments


@pytest.fixture
def context(cdk_context) -> dict:
    return copy.deepcopy(cdk_context) | {"imageTag": "abc123"}


def test_committed_parameters_load(context):
    names = [c.name for c in load_environments(context)]
    assert names == ["staging", "production"]


def test_the_image_tag_is_required(context):
    del context["imageTag"]
    with pytest.raises(ConfigError, match="cdk deploy -c imageTag="):
        load_environments(context)


def test_an_unknown_key_is_refused(context):
    context["spacetime:environments"]["staging"]["workers"]["bulk"]["maxTask"] = 3
    with pytest.raises(ConfigError, match=r"staging.workers.bulk: unknown keys \['maxTask'\]"):
        load_environments(context)


def test_a_certificate_from_another_region_is_refused(context):
    staging = context["spacetime:environments"]["staging"]
    staging["certificateArn"] = staging["certificateArn"].replace("us-east-1", "eu-west-1")
    with pytest.raises(ConfigError, match="certificateArn"):
        load_environments(context)


def test_an_on_demand_base_above_the_minimum_is_refused(context):
    context["spacetime:environments"]["production"]["workers"]["bulk"]["onDemandBase"] = 99
    with pytest.raises(ConfigError, match="onDemandBase"):
        load_environments(context)


def test_production_needs_an_alarm_subscriber(context):
    context["spacetime:environments"]["production"]["alarms"]["email"] = ""
    with pytest.raises(ConfigError, match=r"alarms\.email"):
        load_environments(context)


@pytest.mark.parametrize("change", [{"spotWeight": 1}, {"minTasks": 1, "onDemandBase": 1}])
def test_interactive_workers_are_on_demand_and_in_both_zones(context, change):
    context["spacetime:environments"]["staging"]["workers"]["interactive"].update(change)
    with pytest.raises(ConfigError, match=r"workers\.interactive: On-Demand only"):
        load_environments(context)


def test_the_s3_prefix_list_is_checked(context):
    context["spacetime:environments"]["staging"]["s3PrefixListId"] = "0.0.0.0/0"
    with pytest.raises(ConfigError, match="s3PrefixListId"):
        load_environments(context)
