"""What every container of the stack shares: the images, the logging, the hardening.

The images are the two of docker-compose.yml (backend/Dockerfile, compute/Dockerfile),
pushed by CI to the ECR repositories of the images stack and pulled at the tag given on
the command line. Nothing is built at synthesis: no Docker anywhere.
"""

from aws_cdk import Duration
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from spacetime_infra.config import EnvironmentConfig, ImagesConfig
from spacetime_infra.log_groups import log_group

APP_USER = "10001"  # the images' non-root uid
TMP = "/tmp"  # the one writable path: numba's cache, Dask's spill and scratch space


class Images(Construct):
    """The backend and compute images at this deployment's tag."""

    def __init__(self, scope: Construct, id: str, images: ImagesConfig, tag: str) -> None:
        super().__init__(scope, id)
        # By name, not by reference to the images stack: CI pushes to the repositories
        # before any environment stack exists, and environments deploy independently.
        backend = ecr.Repository.from_repository_name(self, "Backend", images.backend_repository)
        compute = ecr.Repository.from_repository_name(self, "Compute", images.compute_repository)
        self.backend = ecs.ContainerImage.from_ecr_repository(backend, tag)
        self.compute = ecs.ContainerImage.from_ecr_repository(compute, tag)


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
