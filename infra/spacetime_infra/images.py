"""The ECR repositories CI pushes the two images to: a stack of their own, deployed once
before any environment, so that images exist before the services that pull them."""

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from constructs import Construct

from spacetime_infra.config import ImagesConfig


class ImagesStack(Stack):
    def __init__(self, scope: Construct, id: str, config: ImagesConfig, **kwargs) -> None:
        super().__init__(scope, id, **kwargs)
        for name in (config.backend_repository, config.compute_repository):
            ecr.Repository(
                self,
                name,
                repository_name=name,
                # A tag names one commit's image forever: a deployment is reproducible.
                image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                image_scan_on_push=True,
                lifecycle_rules=[ecr.LifecycleRule(max_image_count=config.keep_images)],
                removal_policy=RemovalPolicy.RETAIN,
            )
