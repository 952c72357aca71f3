"""The services: images, commands and settings, health checks, the workers' capacity."""

import json
import sys

from tests.cfn import INFRA_ROOT, container, environment, find, resources, target, text
from tests.conftest import IMAGE_TAG

sys.path.insert(0, str(INFRA_ROOT.parent))  # compute/ (stdlib only: no dask needed here)
from compute.retire import RETIRE_TIMEOUT_S

DASK_CLOSE_S = 10  # dask worker's own close on SIGTERM: Nanny.close(timeout=10)


def test_images_come_from_ecr_at_the_tag(template, cdk_context):
    repositories = cdk_context["spacetime:images"]
    for task, repository in [
        ("ServicesApiTask", "backendRepository"),
        ("ServicesDispatchersTask", "backendRepository"),
        ("ServicesSchedulerTask", "computeRepository"),
        ("WorkersTask", "computeRepository"),
    ]:
        image = text(container(template, task)["Image"])
        assert image.endswith(f"/{repositories[repository]}:{IMAGE_TAG}"), (task, image)


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
    bucket = f"s3://<{find_bucket(template)}>"
    assert text(env["SPACETIME_UPLOADS_URL"]) == f"{bucket}/uploads"
    assert text(env["SPACETIME_REPORTS_URL"]) == f"{bucket}/reports"
    assert json.loads(text(env["SPACETIME_ALLOWED_URL_PREFIXES"])) == [f"{bucket}/uploads/"]
    assert "SPACETIME_S3_ENDPOINT_URL" not in env and "AWS_ACCESS_KEY_ID" not in env  # the task role, not keys
    assert api["Command"] == ["spacetime", "api"]
    assert api["PortMappings"][0]["ContainerPort"] == 5000
    assert "/healthz" in api["HealthCheck"]["Command"][-1]


def test_dispatchers_print_the_metrics_that_scaling_reads(template, env_config):
    env = environment(container(template, "ServicesDispatchersTask"))
    assert env["SPACETIME_CLOUDWATCH_METRICS"] == "true"
    assert env["SPACETIME_BULK_CONCURRENCY"] == str(env_config["dispatcherConcurrency"])


def test_redis_is_reached_over_tls_with_the_secret_token(template):
    secret = next(iter(resources(template, "AWS::SecretsManager::Secret")))
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
    # Workers get the token as it is: their tasks get Redis's URL without it (compute/stored.py).
    worker = container(template, "WorkersTask")
    assert worker["Secrets"] == [{"Name": "REDIS_AUTH_TOKEN", "ValueFrom": {"Ref": secret}}]
    assert "EntryPoint" not in worker and "REDIS_URL" not in environment(worker)
    assert "Secrets" not in container(template, "ServicesSchedulerTask")


def test_the_scheduler_is_found_through_cloud_map(template, env_name):
    namespace, props = next(iter(resources(template, "AWS::ServiceDiscovery::PrivateDnsNamespace").items()))
    assert props["Name"] == f"{env_name}.spacetime.internal"
    (discovery,) = resources(template, "AWS::ServiceDiscovery::Service").values()
    assert discovery["Name"] == "scheduler" and target(discovery["NamespaceId"]) == namespace
    address = f"tcp://scheduler.{env_name}.spacetime.internal:8786"
    assert text(environment(container(template, "ServicesDispatchersTask"))["DASK_SCHEDULER_ADDRESS"]) == address
    assert container(template, "WorkersTask")["Command"][2] == address
    scheduler = find(resources(template, "AWS::ECS::Service"), "ServicesScheduler")
    assert scheduler["DesiredCount"] == 1
    assert scheduler["DeploymentConfiguration"]["MaximumPercent"] == 100  # never two at once


def test_workers_retire_before_they_stop(template):
    worker = container(template, "WorkersTask")
    command = worker["Command"]
    assert command[command.index("--preload-nanny") + 1] == "compute.retire"
    assert command[command.index("--preload") + 1] == "compute.preload"
    assert worker["StopTimeout"] >= RETIRE_TIMEOUT_S + DASK_CLOSE_S
    assert worker["StopTimeout"] <= 120  # ECS's ceiling


def test_worker_size_follows_the_parameters(template, env_config):
    workers = env_config["workers"]
    worker = container(template, "WorkersTask")
    command = worker["Command"]
    assert (worker["Cpu"], worker["Memory"]) == (workers["cpu"], workers["memoryMib"])
    assert command[command.index("--nthreads") + 1] == str(workers["cpu"] // 1024)
    dask_limit = int(command[command.index("--memory-limit") + 1].removesuffix("MiB"))
    assert dask_limit < workers["memoryMib"]  # the nanny acts before the OOM killer


def test_workers_mix_on_demand_and_spot(template, env_config):
    workers = env_config["workers"]
    service = find(resources(template, "AWS::ECS::Service"), "WorkersService")
    strategy = {target(s["CapacityProvider"]): s for s in service["CapacityProviderStrategy"]}
    on_demand = find(strategy, "WorkersOnDemandCapacity")
    spot = find(strategy, "WorkersSpotCapacity")
    assert (on_demand["Base"], on_demand["Weight"]) == (workers["onDemandBase"], 1)
    assert spot["Weight"] == workers["spotWeight"] and "Base" not in spot

    groups = resources(template, "AWS::AutoScaling::AutoScalingGroup")
    for prefix, on_demand_percent in (("WorkersOnDemandGroup", 100), ("WorkersSpotGroup", 0)):
        group = find(groups, prefix)
        policy = group["MixedInstancesPolicy"]
        types = [o["InstanceType"] for o in policy["LaunchTemplate"]["Overrides"]]
        assert types == workers["instanceTypes"]
        assert policy["InstancesDistribution"]["OnDemandPercentageAboveBaseCapacity"] == on_demand_percent
        assert (group["MinSize"], group["MaxSize"]) == ("0", str(workers["maxTasks"]))
    for provider in resources(template, "AWS::ECS::CapacityProvider").values():
        asg = provider["AutoScalingGroupProvider"]
        assert asg["ManagedScaling"]["Status"] == "ENABLED"
        assert asg["ManagedTerminationProtection"] == "ENABLED"


def test_worker_hosts_are_hardened(template):
    for template_data in resources(template, "AWS::EC2::LaunchTemplate").values():
        data = template_data["LaunchTemplateData"]
        assert data["MetadataOptions"]["HttpTokens"] == "required"
        assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True
        assert "ECS_AWSVPC_BLOCK_IMDS=true" in text(data["UserData"]["Fn::Base64"])


def find_bucket(template) -> str:
    return next(k for k in resources(template, "AWS::S3::Bucket") if k.startswith("StorageData"))
