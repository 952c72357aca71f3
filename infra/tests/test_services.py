"""The services: images, commands and settings, health checks, the workers' capacity."""

import json
import math
import re
import sys

import pytest

from tests.cfn import INFRA_ROOT, container, environment, find, minimum_tasks, resources, target, text
from tests.conftest import IMAGE_TAG

sys.path.insert(0, str(INFRA_ROOT.parent))  # compute/ (stdlib only: no dask needed here)
from compute.retire import RETIRE_TIMEOUT_S

DASK_CLOSE_S = 10  # dask worker's own close on SIGTERM: Nanny.close(timeout=10)
STOP_MARGIN_S = 10  # backend/run/supervisor.py STOP_MARGIN_S: the hand-back after the grace
LANES = ("interactive", "bulk")


def worker_task(lane: str) -> str:
    return f"Workers{lane.capitalize()}Task"


def pinned_dask() -> str:
    constraints = (INFRA_ROOT.parent / "constraints.txt").read_text()
    return re.search(r"^dask==(\S+)$", constraints, re.MULTILINE).group(1)


def test_images_come_from_ecr_at_the_environments_tag(template, cdk_context, env_name):
    repositories = cdk_context["spacetime:images"]
    for task, repository in [
        ("ServicesApiTask", "backendRepository"),
        ("ServicesDispatchersTask", "backendRepository"),
        *((worker_task(lane), "computeRepository") for lane in LANES),
    ]:
        image = text(container(template, task)["Image"])
        assert image.endswith(f"/{repositories[repository]}:{env_name}-{IMAGE_TAG}"), (task, image)


def test_the_scheduler_outlives_app_deploys(template, cdk_context):
    """Its image tag names the pinned dask version, never the commit: an app deploy leaves
    its task definition, and so the one scheduler, as they are."""
    images = cdk_context["spacetime:images"]
    image = text(container(template, "ServicesSchedulerTask")["Image"])
    tag = f"scheduler-dask-{pinned_dask()}-r{images['schedulerRevision']}"
    assert image.endswith(f"/{images['computeRepository']}:{tag}"), image
    assert IMAGE_TAG not in image


def test_every_container_is_non_root_read_only_and_logged(template, env_config):
    groups = resources(template, "AWS::Logs::LogGroup")
    assert all(g["RetentionInDays"] == env_config["logRetentionDays"] for g in groups.values())
    for name, task in resources(template, "AWS::ECS::TaskDefinition").items():
        (definition,) = task["ContainerDefinitions"]
        assert definition["User"] == "10001", name
        assert definition["ReadonlyRootFilesystem"] is True, name
        assert definition["MountPoints"][0]["ContainerPath"] == "/tmp", name
        options = definition["LogConfiguration"]["Options"]
        assert target(options["awslogs-group"]) in groups, name


def test_the_api_requires_keys_and_reaches_aws_services(template):
    api = container(template, "ServicesApiTask")
    env = environment(api)
    assert env["SPACETIME_AUTH"] == "keys"
    assert env["SPACETIME_REDIS_MIN_REPLICAS"] == "1"  # WAIT for the replica: a failover loses no 201
    bucket = f"s3://<{find_bucket(template)}>"
    assert text(env["SPACETIME_UPLOADS_URL"]) == f"{bucket}/uploads"
    assert text(env["SPACETIME_REPORTS_URL"]) == f"{bucket}/reports"
    assert json.loads(text(env["SPACETIME_ALLOWED_URL_PREFIXES"])) == [f"{bucket}/uploads/"]
    assert "SPACETIME_S3_ENDPOINT_URL" not in env and "AWS_ACCESS_KEY_ID" not in env  # the task role, not keys
    assert api["Command"] == ["spacetime", "api"]
    assert api["PortMappings"][0]["ContainerPort"] == 5000


def test_liveness_is_the_process_and_readiness_includes_redis(template):
    """ECS restarts a task on /livez (never touches Redis), so a Redis failover does not
    replace the fleet; the load balancer routes on /readyz (checks Redis)."""
    check = container(template, "ServicesApiTask")["HealthCheck"]["Command"][-1]
    assert "127.0.0.1:5000/livez'" in check
    (group,) = resources(template, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
    assert group["HealthCheckPath"] == "/readyz"


def test_dispatchers_print_the_metrics_that_scaling_reads(template, env_config):
    env = environment(container(template, "ServicesDispatchersTask"))
    assert env["SPACETIME_CLOUDWATCH_METRICS"] == "true"
    assert env["SPACETIME_BULK_CONCURRENCY"] == str(env_config["dispatcherConcurrency"])


def test_redis_is_reached_over_tls_with_the_secret_token(template):
    secret = next(k for k in resources(template, "AWS::SecretsManager::Secret") if k.startswith("CacheAuthToken"))
    for task in ("ServicesApiTask", "ServicesDispatchersTask"):
        definition = container(template, task)
        assert definition["Secrets"] == [{"Name": "REDIS_AUTH_TOKEN", "ValueFrom": {"Ref": secret}}]
        script = definition["EntryPoint"][2]
        assert 'REDIS_URL="rediss://:$REDIS_AUTH_TOKEN@$REDIS_HOST:$REDIS_PORT/0"' in script
        assert script.endswith('exec "$@"')
        env = environment(definition)
        redis = next(iter(resources(template, "AWS::ElastiCache::ReplicationGroup")))
        assert env["REDIS_HOST"] == {"Fn::GetAtt": [redis, "PrimaryEndPoint.Address"]}
        assert env["REDIS_PORT"] == {"Fn::GetAtt": [redis, "PrimaryEndPoint.Port"]}
    # Workers get their own user's password as it is: their tasks get Redis's URL without
    # one (compute/stored.py), and never the default user's.
    worker_secret = next(k for k in resources(template, "AWS::SecretsManager::Secret") if "WorkerPassword" in k)
    users = {u["UserName"]: u for u in resources(template, "AWS::ElastiCache::User").values()}
    for lane in LANES:
        worker = container(template, worker_task(lane))
        assert worker["Secrets"] == [{"Name": "REDIS_AUTH_TOKEN", "ValueFrom": {"Ref": worker_secret}}]
        username = environment(worker)["REDIS_USERNAME"]
        assert username in users and username != "default"
        assert "EntryPoint" not in worker and "REDIS_URL" not in environment(worker)
    assert "Secrets" not in container(template, "ServicesSchedulerTask")


def test_the_scheduler_is_found_through_cloud_map(template, env_name):
    namespace, props = next(iter(resources(template, "AWS::ServiceDiscovery::PrivateDnsNamespace").items()))
    assert props["Name"] == f"{env_name}.spacetime.internal"
    (discovery,) = resources(template, "AWS::ServiceDiscovery::Service").values()
    assert discovery["Name"] == "scheduler" and target(discovery["NamespaceId"]) == namespace
    address = f"tcp://scheduler.{env_name}.spacetime.internal:8786"
    assert text(environment(container(template, "ServicesDispatchersTask"))["DASK_SCHEDULER_ADDRESS"]) == address
    for lane in LANES:
        assert container(template, worker_task(lane))["Command"][2] == address
    scheduler = find(resources(template, "AWS::ECS::Service"), "ServicesScheduler")
    assert scheduler["DesiredCount"] == 1
    assert scheduler["DeploymentConfiguration"]["MaximumPercent"] == 100  # never two at once


@pytest.mark.parametrize("lane", LANES)
def test_workers_retire_before_they_stop(template, lane):
    worker = container(template, worker_task(lane))
    command = worker["Command"]
    assert command[command.index("--preload-nanny") + 1] == "compute.retire"
    assert command[command.index("--preload") + 1] == "compute.preload"
    assert worker["StopTimeout"] >= RETIRE_TIMEOUT_S + DASK_CLOSE_S
    assert worker["StopTimeout"] <= 120  # ECS's ceiling


def test_stop_timeouts_cover_the_shutdown_grace(template):
    """A container that is given a grace (SPACETIME_SHUTDOWN_GRACE_S) is not killed before
    it has spent it and handed back its jobs."""
    graced = 0
    for task in resources(template, "AWS::ECS::TaskDefinition").values():
        (definition,) = task["ContainerDefinitions"]
        grace = environment(definition).get("SPACETIME_SHUTDOWN_GRACE_S")
        if grace is not None:
            graced += 1
            assert definition["StopTimeout"] >= float(grace) + STOP_MARGIN_S, definition["Name"]
    assert graced == 1  # the dispatchers: the API and the workers have no such grace


@pytest.mark.parametrize("lane", LANES)
def test_worker_pools_offer_their_lanes_resource(template, env_config, lane):
    """As compose and ``spacetime up`` do: one unit of the lane's resource per thread, so
    image tasks (interactive) and block tasks (bulk) never share a worker's threads."""
    pool = env_config["workers"][lane]
    worker = container(template, worker_task(lane))
    command = worker["Command"]
    assert (worker["Cpu"], worker["Memory"]) == (pool["cpu"], pool["memoryMib"])
    nthreads = command[command.index("--nthreads") + 1]
    assert nthreads == str(pool["cpu"] // 1024)
    assert command[command.index("--resources") + 1] == f"{lane}={nthreads}"
    dask_limit = int(command[command.index("--memory-limit") + 1].removesuffix("MiB"))
    assert dask_limit < pool["memoryMib"]  # the nanny acts before the OOM killer


def test_interactive_workers_are_on_demand_in_both_zones(template, env_config):
    pool = env_config["workers"]["interactive"]
    service = find(resources(template, "AWS::ECS::Service"), "WorkersInteractiveService")
    (strategy,) = service["CapacityProviderStrategy"]
    assert target(strategy["CapacityProvider"]).startswith("WorkersInteractiveOnDemandCapacity")
    assert service["DesiredCount"] == pool["minTasks"] >= 2
    assert service["PlacementStrategies"] == [{"Field": "attribute:ecs.availability-zone", "Type": "spread"}]
    group = find(resources(template, "AWS::AutoScaling::AutoScalingGroup"), "WorkersInteractiveOnDemandGroup")
    assert group["MixedInstancesPolicy"]["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == 100


def test_bulk_workers_mix_on_demand_and_spot(template, env_config):
    workers = env_config["workers"]["bulk"]
    service = find(resources(template, "AWS::ECS::Service"), "WorkersBulkService")
    strategy = {target(s["CapacityProvider"]): s for s in service["CapacityProviderStrategy"]}
    on_demand = find(strategy, "WorkersBulkOnDemandCapacity")
    spot = find(strategy, "WorkersBulkSpotCapacity")
    assert (on_demand["Base"], on_demand["Weight"]) == (workers["onDemandBase"], 1)
    assert spot["Weight"] == workers["spotWeight"] and "Base" not in spot

    groups = resources(template, "AWS::AutoScaling::AutoScalingGroup")
    for prefix, on_demand_percent in (("WorkersBulkOnDemandGroup", 100), ("WorkersBulkSpotGroup", 0)):
        group = find(groups, prefix)
        policy = group["MixedInstancesPolicy"]
        types = [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]]
        assert types == workers["instanceTypes"]
        assert policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == on_demand_percent
        assert group["MinSize"] == "0"
    for provider in resources(template, "AWS::ECS::CapacityProvider").values():
        asg = provider["AutoScalingGroupProvider"]
        assert asg["ManagedScaling"]["Status"] == "ENABLED"
        assert asg["ManagedTerminationProtection"] == "ENABLED"


def test_each_pool_has_capacity_of_its_own(template):
    """Three capacity providers (interactive On-Demand, bulk On-Demand, bulk Spot), each
    named by exactly one service's strategy."""
    providers = set(resources(template, "AWS::ECS::CapacityProvider"))
    named = [
        target(s["CapacityProvider"])
        for service in resources(template, "AWS::ECS::Service").values()
        for s in service.get("CapacityProviderStrategy", [])
    ]
    assert len(providers) == 3 and sorted(named) == sorted(providers)


def test_deployments_can_move_at_the_minimum_task_count(template, env_config):
    """ECS rounds the minimum healthy count up and the maximum down: at the service's
    smallest count, a deployment must be able to start a task or stop one, or it stalls
    (aws/containers-roadmap#485)."""
    minimums = minimum_tasks(env_config)
    services = resources(template, "AWS::ECS::Service")
    assert len(services) == len(minimums)
    for prefix, count in minimums.items():
        deployment = find(services, prefix)["DeploymentConfiguration"]
        lowest = math.ceil(count * deployment["MinimumHealthyPercent"] / 100)
        highest = math.floor(count * deployment["MaximumPercent"] / 100)
        assert highest > count or lowest < count, (prefix, count, deployment)
        assert deployment["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}, prefix


def test_worker_deployments_have_instances_at_the_maximum_count(template, env_config):
    """One worker per instance: at a pool's maximum, the new tasks of a deployment need
    instances beside the old ones, so each group may grow to the deployment's peak."""
    services = resources(template, "AWS::ECS::Service")
    groups = resources(template, "AWS::AutoScaling::AutoScalingGroup")
    for lane in LANES:
        name = lane.capitalize()
        deployment = find(services, f"Workers{name}Service")["DeploymentConfiguration"]
        peak = env_config["workers"][lane]["maxTasks"] * deployment["MaximumPercent"] // 100
        for group_id, group in groups.items():
            if group_id.startswith(f"Workers{name}"):
                assert int(group["MaxSize"]) >= peak, group_id


def test_worker_hosts_are_hardened(template):
    for template_data in resources(template, "AWS::EC2::LaunchTemplate").values():
        data = template_data["LaunchTemplateData"]
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
        assert "ECS_AWSVPC_BLOCK_IMDS=true" in text(data["UserData"]["Fn::Base64"])


def test_spot_hosts_drain_on_an_interruption_notice(template):
    """Written into the user data: the capacity provider's own switch needs a spotPrice,
    which a mixed-instances group never has (aws-cdk#24360)."""
    templates = resources(template, "AWS::EC2::LaunchTemplate")
    assert len(templates) == 3
    for name, launch_template in templates.items():
        user_data = text(launch_template["LaunchTemplateData"]["UserData"]["Fn::Base64"])
        draining = "echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config" in user_data.splitlines()
        assert draining == ("Spot" in name), name


def find_bucket(template) -> str:
    return next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("StorageData"))
