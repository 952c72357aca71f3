"""cdk-nag's AwsSolutions findings this design accepts, each with its reason.

Every other finding fails synthesis (app.py). Each acknowledgement sits on the construct
it concerns and, where the rule reports findings one by one (IAM5), names the exact
finding, so a new resource or a new wildcard is checked afresh.
"""

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

from spacetime_infra.cache import Cache
from spacetime_infra.flows import Flows
from spacetime_infra.roles import TaskRoles
from spacetime_infra.services import Services
from spacetime_infra.storage import REPORTS, UPLOADS, Storage
from spacetime_infra.workers import Workers


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_accepted_findings(
    *, flows: Flows, storage: Storage, roles: TaskRoles, cache: Cache, services: Services, workers: Workers
) -> None:
    acknowledge(
        flows.alb,
        "AwsSolutions-EC23",
        "The load balancer is the public entry point: HTTPS (443) from anywhere is its one ingress rule.",
    )

    bucket = Stack.of(storage.bucket).get_logical_id(storage.bucket.node.default_child)
    for role in (roles.api, roles.dispatchers, roles.workers):
        for prefix in (UPLOADS, REPORTS):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/{prefix}/*]",
                f"Objects are named by job token, so access is granted per prefix: {prefix}/ and nothing else; "
                "the actions are listed one by one (roles.py).",
            )
    acknowledge(
        roles.workers,
        f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/{UPLOADS}/images/*]",
        "Large images' files are named by job token and task key: workers write under uploads/images/ "
        "and nowhere else in uploads/ (roles.py).",
    )

    worker_tasks = [service.task_definition for service in workers.pools.values()]
    ecs_tasks = [services.api.task_definition, services.dispatchers.task_definition, services.scheduler.task_definition]
    for task in [*ecs_tasks, *worker_tasks]:
        assert task.execution_role is not None
        acknowledge(
            task.execution_role,
            "AwsSolutions-IAM5[Resource::*]",
            "ecr:GetAuthorizationToken has no resource-level permissions; the pulls and log writes "
            "it allows are scoped to the repository and the log group.",
        )
    for task in (services.api.task_definition, services.dispatchers.task_definition, *worker_tasks):
        acknowledge(
            task,
            "AwsSolutions-ECS2",
            "Plain configuration (endpoints, bucket URLs, sizes) is set as environment variables; the one "
            "secret, the Redis user's password, comes from Secrets Manager.",
        )

    for role in workers.instance_roles:
        for finding in ("Resource::*", "Action::ecs:Submit*"):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[{finding}]",
                "The ECS agent's own permissions, as the CDK grants them to container instances: it "
                "registers itself and reports task state; tasks never use this role (ECS_AWSVPC_BLOCK_IMDS).",
            )
    for group in workers.groups:
        acknowledge(
            group,
            "AwsSolutions-EC26",
            "The rule cannot read volumes through a launch template; the launch template's root "
            "volume is encrypted (workers.py, asserted by infra/tests).",
        )
        acknowledge(
            group,
            "AwsSolutions-AS3",
            "The groups are sized by ECS managed scaling; their activity is in ECS events and the "
            "Auto Scaling history. The alarms topic is kept for conditions that need a person.",
        )

    for secret in (cache.auth_token, cache.worker_password):
        acknowledge(
            secret,
            "AwsSolutions-SMG4",
            "Rotating an ElastiCache user's password takes a second password on the user and a restart "
            "of the tasks that hold it; it is a runbook step (docs/deployment-aws.md), not a rotation Lambda.",
        )
    acknowledge(
        cache.group,
        "AwsSolutions-AEC6",
        "Redis users (RBAC) replace the single AUTH token: every connection authenticates as the default "
        "user or the workers' restricted user, each with a password from Secrets Manager (cache.py).",
    )
    acknowledge(
        cache.group,
        "AwsSolutions-AEC5",
        "The port is no secret: only the API, dispatcher and worker security groups may reach it, "
        "over TLS with a user and password. The default keeps the URL the same as everywhere else.",
    )
