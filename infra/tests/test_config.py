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
    context["spacetime:environments"]["staging"]["workers"]["maxTask"] = 3
    with pytest.raises(ConfigError, match=r"staging.workers: unknown keys \['maxTask'\]"):
        load_environments(context)


def test_a_certificate_from_another_region_is_refused(context):
    staging = context["spacetime:environments"]["staging"]
    staging["certificateArn"] = staging["certificateArn"].replace("us-east-1", "eu-west-1")
    with pytest.raises(ConfigError, match="certificateArn"):
        load_environments(context)


def test_an_on_demand_base_above_the_minimum_is_refused(context):
    context["spacetime:environments"]["production"]["workers"]["onDemandBase"] = 99
    with pytest.raises(ConfigError, match="onDemandBase"):
        load_environments(context)
