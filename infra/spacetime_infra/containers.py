"""What every container of the stack shares: the images, the logging, the hardening.

The images are the two of docker-compose.yml (backend/Dockerfile, compute/Dockerfile),
pushed by CI to the ECR repositories of the images stack. Nothing is built at synthesis:
no Docker anywhere. Three tags (images.py keeps each environment's apart):

- ``<environment>-<imageTag>``: the API, dispatchers and workers, a new one every deploy;
- ``scheduler-dask-<version>-r<revision>``: the scheduler, the compute image as of the
  first commit that pinned this dask version. Its task definition then stays the same
  across app deploys, so CloudFormation leaves the one scheduler running (a restart
  would drop every client's running jobs). It changes when constraints.txt pins another
  dask (the workers and clients must match the scheduler's version) or when
  ``schedulerRevision`` is raised: the scheduler unpickles the graphs it is sent, which
  imports the task functions of ``compute`` by name, so a commit that adds, renames or
  moves one raises it (docs/deployment-aws.md).
"""

import re
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from spacetime_infra.config import EnvironmentConfig, ImagesConfig
from spacetime_infra.log_groups import log_group

APP_USER = "10001"  # the images' non-root uid
TMP = "/tmp"  # the one writable path: numba's cache, Dask's spill and scratch space
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"
SCHEDULER_TAG_PREFIX = "scheduler-"


def pinned_dask() -> str:
    """The dask version constraints.txt pins (the images install exactly that)."""
    match = re.search(r"^dask==(\S+)$", CONSTRAINTS.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f"{CONSTRAINTS}: no dask== pin")
    return match.group(1)


def scheduler_tag(images: ImagesConfig) -> str:
    return f"{SCHEDULER_TAG_PREFIX}dask-{pinned_dask()}-r{images.scheduler_revision}"


def app_tag(environment: str, image_tag: str) -> str:
    """The tag an environment runs: CI adds it to the commit's image before deploying."""
    return f"{environment}-{image_tag}"


class Images(Construct):
    """The backend and compute images at this deployment's tag, and the scheduler's."""

    def __init__(self, scope: Construct, id: str, images: ImagesConfig, environment: str, image_tag: str) -> None:
        super().__init__(scope, id)
        # By name, not by reference to the images stack: CI pushes to the repositories
        # before any environment stack exists, and environments deploy independently.
        backend = ecr.Repository.from_repository_name(self, "Backend", images.backend_repository)
        compute = ecr.Repository.from_repository_name(self, "Compute", images.compute_repository)
        tag = app_tag(environment, image_tag)
        self.backend = ecs.ContainerImage.from_ecr_repository(backend, tag)
        self.compute = ecs.ContainerImage.from_ecr_repository(compute, tag)
        self.scheduler = ecs.ContainerImage.from_ecr_repository(compute, scheduler_tag(images))


def python_health_check(port: int, path: str) -> ecs.HealthCheck:
    """The compose file's healthcheck: the image's python fetches a local URL (no curl in slim
    images); urlopen raises on a 5xx, which fails the check."""
    code = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=4)"
    return ecs.HealthCheck(
        command=["CMD", "python", "-c", code],
        interval=Duration.seconds(15),
        timeout=Duration.seconds(5),
        retries=3,
        start_period=Duration.seconds(30),
    )


def add_app_container(
    task: ecs.TaskDefinition,
    name: str,
    config: EnvironmentConfig,
    *,
    image: ecs.ContainerImage,
    command: list[str],
    environment: dict[str, str],
    stop_timeout_s: int,
    **options,
) -> ecs.ContainerDefinition:
    """The one container of ``task``: non-root, read-only root filesystem with a writable
    /tmp volume, stdout to its own log group (which is where the dispatchers' embedded
    metrics reach CloudWatch)."""
    task.add_volume(name="tmp")
    container = task.add_container(
        name,
        container_name=name,
        image=image,
        command=command,
        environment=environment,
        user=APP_USER,
        readonly_root_filesystem=True,
        stop_timeout=Duration.seconds(stop_timeout_s),
        logging=ecs.LogDrivers.aws_logs(
            stream_prefix=name,
            log_group=log_group(task, "Logs", config.log_retention_days),
            mode=ecs.AwsLogDriverMode.NON_BLOCKING,
        ),
        **options,
    )
    container.add_mount_points(ecs.MountPoint(container_path=TMP, source_volume="tmp", read_only=False))
    return container
