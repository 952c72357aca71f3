"""The ECR repositories CI pushes the two images to: a stack of their own, deployed once
before any environment, so that images exist before the services that pull them.

Staging and production share the repositories, so the lifecycle keeps each one's images
apart: every environment runs tags of its own prefix (containers.py), and the rules for
those prefixes come first. ECR never expires an image that a higher-priority rule matches,
so fifty staging commits cannot expire the image production runs.
"""

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from constructs import Construct

from spacetime_infra.config import ImagesConfig
from spacetime_infra.containers import SCHEDULER_TAG_PREFIX, app_tag


class ImagesStack(Stack):
    def __init__(self, scope: Construct, id: str, config: ImagesConfig, environments: list[str], **kwargs) -> None:
        super().__init__(scope, id, **kwargs)
        prefixes = [app_tag(name, "") for name in environments] + [SCHEDULER_TAG_PREFIX]
        rules = [
            ecr.LifecycleRule(
                rule_priority=priority,
                description=f"keep the last {config.keep_deployed_images} {prefix}* images: deployed and rollbacks",
                tag_status=ecr.TagStatus.TAGGED,
                tag_prefix_list=[prefix],
                max_image_count=config.keep_deployed_images,
            )
            for priority, prefix in enumerate(prefixes, start=1)
        ]
        rules.append(
            ecr.LifecycleRule(
                rule_priority=len(rules) + 1,
                description="commits never deployed, untagged layers",
                tag_status=ecr.TagStatus.ANY,
                max_image_count=config.keep_images,
            )
        )
        for name in (config.backend_repository, config.compute_repository):
            ecr.Repository(
                self,
                name,
                repository_name=name,
                # A tag names one commit's image forever: a deployment is reproducible.
                image_tag_mutability=ecr.TagMutability.IMMUTABLE,
                image_scan_on_push=True,
                lifecycle_rules=rules,
                removal_policy=RemovalPolicy.RETAIN,
            )
