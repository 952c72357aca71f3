"""ElastiCache for Redis: a primary and a replica in the two zones, automatic failover,
TLS in transit, encryption at rest, and an AUTH token that Secrets Manager generates.

``maxmemory-policy noeviction``: a full Redis refuses new jobs (the API answers with an
error) rather than silently dropping queued ones or results. The queue, the job records
and image inputs all live here, so the node is sized for peak in-flight images.
"""

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from spacetime_infra.flows import REDIS_PORT
from spacetime_infra.network import DATA

ENGINE_VERSION = "7.1"
PARAMETER_FAMILY = "redis7"
NODES = 2  # a primary and one replica, one per zone
# The variable a container finds the AUTH token in: the API's and dispatchers' entry point
# builds REDIS_URL from it (services.py); workers read it as it is, since the URL their
# tasks get carries no password (compute/stored.py: REDIS_PASSWORD_ENV, the same name).
AUTH_TOKEN_ENV = "REDIS_AUTH_TOKEN"


class Cache(Construct):
    def __init__(
        self, scope: Construct, id: str, *, vpc: ec2.IVpc, security_group: ec2.ISecurityGroup, node_type: str, name: str
    ) -> None:
        super().__init__(scope, id)
        # Letters and digits only: the token goes into a rediss:// URL unescaped.
        self.auth_token = secretsmanager.Secret(
            self,
            "AuthToken",
            description=f"AUTH token of the {name} Redis",
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
        )
        subnets = elasticache.CfnSubnetGroup(
            self,
            "Subnets",
            description=f"{name}: the isolated data subnets",
            subnet_ids=vpc.select_subnets(subnet_group_name=DATA).subnet_ids,
        )
        parameters = elasticache.CfnParameterGroup(
            self,
            "Parameters",
            cache_parameter_group_family=PARAMETER_FAMILY,
            description=f"{name}: refuse writes when full rather than evict queued jobs",
            properties={"maxmemory-policy": "noeviction"},
        )
        self.replication_group_id = name
        self.group = elasticache.CfnReplicationGroup(
            self,
            "Redis",
            replication_group_id=name,
            replication_group_description=f"SpaceTime {name}: job queue, records and results",
            engine="redis",
            engine_version=ENGINE_VERSION,
            cache_node_type=node_type,
            num_cache_clusters=NODES,
            automatic_failover_enabled=True,
            multi_az_enabled=True,
            transit_encryption_enabled=True,
            at_rest_encryption_enabled=True,
            # A dynamic reference: CloudFormation reads the secret at deploy time; the
            # template never holds the token.
            auth_token=self.auth_token.secret_value.unsafe_unwrap(),
            port=REDIS_PORT,
            cache_subnet_group_name=subnets.ref,
            cache_parameter_group_name=parameters.ref,
            security_group_ids=[security_group.security_group_id],
            snapshot_retention_limit=7,
            auto_minor_version_upgrade=True,
        )
        self.host = self.group.attr_primary_end_point_address
        self.port = self.group.attr_primary_end_point_port

    def auth_token_env(self) -> dict[str, ecs.Secret]:
        """The token as an ECS secret: injected at start, never in the task definition."""
        return {AUTH_TOKEN_ENV: ecs.Secret.from_secrets_manager(self.auth_token)}

    @property
    def node_ids(self) -> list[str]:
        """The member clusters' ids, as ElastiCache names them: the CloudWatch dimension."""
        return [f"{self.replication_group_id}-{i:03d}" for i in range(1, NODES + 1)]
