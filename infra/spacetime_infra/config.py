"""The parameters of one environment, read from cdk.json's context and checked at once.

cdk.json holds one block per environment under ``spacetime:environments`` (edit it for
your account: certificate, alarm e-mail, sizes); the image tag changes on every deploy,
so it comes from the command line: ``cdk deploy -c imageTag=<commit>``. A bad value stops
synthesis with a message naming it, not a failed deployment twenty minutes later.
"""

import re
from dataclasses import dataclass, fields
from typing import Any

from spacetime_infra.log_groups import RETENTION
from spacetime_infra.metrics import KINDS

ENVIRONMENTS_KEY = "spacetime:environments"
IMAGES_KEY = "spacetime:images"
IMAGE_TAG_KEY = "imageTag"

_CERTIFICATE_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}$")
_IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # ECR's rule for a tag
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_PREFIX_LIST = re.compile(r"^pl-[0-9a-f]{8,17}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The environment whose alarms must reach a person.
PRODUCTION = "production"


class ConfigError(ValueError):
    """A context value that cannot make a working stack."""


@dataclass(frozen=True)
class Service:
    """A Fargate service's size and task count range."""

    cpu: int  # CPU units: 1024 is one vCPU
    memory_mib: int
    min_tasks: int
    max_tasks: int


@dataclass(frozen=True)
class TaskSize:
    cpu: int
    memory_mib: int


@dataclass(frozen=True)
class WorkerPool:
    """One pool of Dask workers: one task per EC2 instance, On-Demand up to a base, Spot beyond."""

    instance_types: list[str]  # same size and architecture (x86_64, the images'), for Spot diversity
    cpu: int  # the task's CPU units; --nthreads is one per vCPU, and so is the lane's resource
    memory_mib: int  # the task's hard limit; dask's --memory-limit sits below it
    min_tasks: int
    max_tasks: int
    on_demand_base: int  # tasks always on On-Demand instances
    spot_weight: int  # beyond the base: Spot tasks per On-Demand task (0: On-Demand only)
    backlog_per_worker: int  # target of the lane's (blocks queued + jobs running) per worker


@dataclass(frozen=True)
class Workers:
    """Two pools, as in docker-compose.yml: image tasks need the ``interactive`` resource and
    block tasks the ``bulk`` one, so an image never waits behind a 64 MiB block."""

    interactive: WorkerPool  # On-Demand only, at least one per zone: images start within seconds
    bulk: WorkerPool  # On-Demand base, Spot beyond: blocks may be retired and rerun


@dataclass(frozen=True)
class Alarms:
    queue_wait_p95_seconds: dict[str, int]  # per job kind
    errored_jobs_per_5_min: int
    redis_memory_percent: int
    email: str  # the subscriber; required in production ("" elsewhere: the topic only)


@dataclass(frozen=True)
class EnvironmentConfig:
    name: str
    region: str
    availability_zones: list[str]
    s3_prefix_list_id: str  # the region's com.amazonaws.<region>.s3 prefix list: the one egress outside the VPC
    certificate_arn: str
    image_tag: str
    log_retention_days: int
    api: Service
    api_requests_per_target: int  # per minute, ALB RequestCountPerTarget's target
    dispatchers: Service
    dispatcher_concurrency: int
    scheduler: TaskSize  # always one task: a second scheduler would split the cluster
    workers: Workers
    redis_node_type: str
    alarms: Alarms

    @property
    def stack_name(self) -> str:
        return f"SpaceTime-{self.name}"


@dataclass(frozen=True)
class ImagesConfig:
    region: str
    backend_repository: str
    compute_repository: str
    keep_images: int  # untagged or unprefixed images; each environment's own are kept apart (images.py)
    keep_deployed_images: int  # per environment, and of the scheduler's: the deployed one and rollbacks
    scheduler_revision: int  # raised when compute's task functions move (containers.py)


def load_environments(context: dict[str, Any]) -> list[EnvironmentConfig]:
    """Every environment of ``spacetime:environments``, each checked."""
    environments = context.get(ENVIRONMENTS_KEY)
    if not isinstance(environments, dict) or not environments:
        raise ConfigError(f"cdk.json: context {ENVIRONMENTS_KEY!r} must map environment names to their parameters")
    image_tag = context.get(IMAGE_TAG_KEY)
    if not isinstance(image_tag, str) or not _IMAGE_TAG.match(image_tag):
        raise ConfigError(
            f"context {IMAGE_TAG_KEY!r} is {image_tag!r}: pass the tag CI pushed to ECR, "
            f"e.g. cdk deploy -c {IMAGE_TAG_KEY}=$(git rev-parse HEAD)"
        )
    return [_environment(name, raw, image_tag) for name, raw in environments.items()]


def load_images(context: dict[str, Any]) -> ImagesConfig:
    raw = context.get(IMAGES_KEY)
    if not isinstance(raw, dict):
        raise ConfigError(f"cdk.json: context {IMAGES_KEY!r} is missing")
    return _build(ImagesConfig, raw, IMAGES_KEY)


def _environment(name: str, raw: dict[str, Any], image_tag: str) -> EnvironmentConfig:
    where = f"{ENVIRONMENTS_KEY}.{name}"
    if not re.match(r"^[a-z][a-z0-9-]{0,19}$", name):
        raise ConfigError(f"{where}: environment names are lowercase letters, digits and '-' (at most 20)")
    nested = {
        "api": (Service, raw.get("api")),
        "dispatchers": (Service, raw.get("dispatchers")),
        "scheduler": (TaskSize, raw.get("scheduler")),
        "workers": (Workers, raw.get("workers")),
        "alarms": (Alarms, raw.get("alarms")),
    }
    pools = raw.get("workers")
    if isinstance(pools, dict):
        pools = {k: _build(WorkerPool, v, f"{where}.workers.{k}") for k, v in pools.items()}
        nested["workers"] = (Workers, pools)
    values = dict(raw) | {key: _build(cls, value, f"{where}.{key}") for key, (cls, value) in nested.items()}
    config = _build(EnvironmentConfig, values | {"name": name, "imageTag": image_tag}, where)
    _check(config, where)
    return config


def _build(cls, raw: Any, where: str):
    """``cls`` from camelCase keys; every field required, no unknown key (a typo fails here)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected an object")
    names = {_camel(f.name): f.name for f in fields(cls)}
    unknown = set(raw) - set(names)
    missing = set(names) - set(raw)
    if unknown or missing:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    return cls(**{names[key]: value for key, value in raw.items()})


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _check(config: EnvironmentConfig, where: str) -> None:
    problems = []
    if len(config.availability_zones) != 2 or not all(az.startswith(config.region) for az in config.availability_zones):
        problems.append(f"availabilityZones: two zones of {config.region}")
    if not _PREFIX_LIST.match(config.s3_prefix_list_id):
        problems.append(
            f"s3PrefixListId: aws ec2 describe-managed-prefix-lists --filters "
            f"Name=prefix-list-name,Values=com.amazonaws.{config.region}.s3"
        )
    if not _CERTIFICATE_ARN.match(config.certificate_arn) or f":{config.region}:" not in config.certificate_arn:
        problems.append(f"certificateArn: an ACM certificate ARN in {config.region}")
    if config.log_retention_days not in RETENTION:
        problems.append(f"logRetentionDays: one of {sorted(RETENTION)}")
    for label, service in (("api", config.api), ("dispatchers", config.dispatchers)):
        if not 1 <= service.min_tasks <= service.max_tasks:
            problems.append(f"{label}: 1 <= minTasks <= maxTasks")
    if config.api.min_tasks < 2:
        problems.append("api.minTasks: at least 2, one per zone")
    for label, pool in (("interactive", config.workers.interactive), ("bulk", config.workers.bulk)):
        problems += [f"workers.{label}.{p}" for p in _pool_problems(pool)]
    interactive = config.workers.interactive
    if interactive.spot_weight or interactive.min_tasks < 2 or interactive.on_demand_base != interactive.min_tasks:
        problems.append("workers.interactive: On-Demand only (spotWeight 0, onDemandBase = minTasks >= 2)")
    if config.name == PRODUCTION and not _EMAIL.match(config.alarms.email):
        problems.append("alarms.email: production's alarms need a subscriber (an e-mail address)")
    elif config.alarms.email and not _EMAIL.match(config.alarms.email):
        problems.append("alarms.email: an e-mail address, or empty")
    if set(config.alarms.queue_wait_p95_seconds) != set(KINDS):
        problems.append(f"alarms.queueWaitP95Seconds: a threshold for each job kind, {' and '.join(KINDS)}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def _pool_problems(pool: WorkerPool) -> list[str]:
    problems = []
    if not pool.instance_types or not all(_INSTANCE_TYPE.match(t) for t in pool.instance_types):
        problems.append("instanceTypes: EC2 instance types such as r7i.large")
    if pool.cpu % 1024:
        problems.append("cpu: whole vCPUs (a multiple of 1024)")
    if not 1 <= pool.min_tasks <= pool.max_tasks or not 1 <= pool.on_demand_base <= pool.min_tasks:
        problems.append("1 <= minTasks <= maxTasks and 1 <= onDemandBase <= minTasks")
    if pool.spot_weight < 0:
        problems.append("spotWeight: 0 or more")
    return problems
