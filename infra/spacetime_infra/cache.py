"""ElastiCache for Redis: a primary and a replica in the two zones, automatic failover,
TLS in transit, encryption at rest, and two users (RBAC), each with a password that
Secrets Manager generates:

- ``default``: the API and the dispatchers, every command (they run the job contract's
  Lua scripts over many key families);
- the workers' user: only what an image task does (compute/stored.py), HGET of
  ``input:*`` and HSET (with EXPIRE) of ``staged:*``, a piece at a time. A worker
  decodes PNGs that anyone may send; a worker taken over reads other images at most, and
  cannot touch the queue.

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
# The variable a container finds its Redis password in: the API's and dispatchers' entry
# point builds REDIS_URL from it (services.py); workers read it as it is, since the URL
# their tasks get carries no password (compute/stored.py: REDIS_PASSWORD_ENV, the same
# name), and their user name from the next one (compute/stored.py: REDIS_USERNAME_ENV).
AUTH_TOKEN_ENV = "REDIS_AUTH_TOKEN"
USERNAME_ENV = "REDIS_USERNAME"
# The workers' ACL: keys.INPUT and keys.STAGED of backend/jobs/keys.py, and the commands
# of compute/redis_values.py (COMMANDS), by which compute/stored.py reads and writes images
# in pieces (redis-py's CLIENT SETINFO at connect is refused and ignored).
WORKER_ACCESS = "on ~input:* ~staged:* -@all +hget +hset +expire +multi +exec"
# Everything, channels included (&*): the API's waits SUBSCRIBE to the job endings that
# the final writes PUBLISH (backend/api/endings.py), and Redis 7 gives new users no channel.
DEFAULT_ACCESS = "on ~* &* +@all"


class Cache(Construct):
    def __init__(
        self, scope: Construct, id: str, *, vpc: ec2.IVpc, security_group: ec2.ISecurityGroup, node_type: str, name: str
    ) -> None:
        super().__init__(scope, id)
        # Letters and digits only: the password goes into a rediss:// URL unescaped.
        self.auth_token = self._password("AuthToken", f"password of the {name} Redis's default user")
        self.worker_password = self._password("WorkerPassword", f"password of the {name} Redis's workers user")
        self.worker_user_name = f"{name}-workers"
        users = [
            self._user("DefaultUser", f"{name}-default", "default", DEFAULT_ACCESS, self.auth_token),
            self._user("WorkerUser", self.worker_user_name, self.worker_user_name, WORKER_ACCESS, self.worker_password),
        ]
        self.user_group = elasticache.CfnUserGroup(
            self, "Users", engine="redis", user_group_id=name, user_ids=[u.ref for u in users]
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
            user_group_ids=[self.user_group.ref],
            port=REDIS_PORT,
            cache_subnet_group_name=subnets.ref,
            cache_parameter_group_name=parameters.ref,
            security_group_ids=[security_group.security_group_id],
            snapshot_retention_limit=7,
            auto_minor_version_upgrade=True,
        )
        self.host = self.group.attr_primary_end_point_address
        self.port = self.group.attr_primary_end_point_port

    def _password(self, id: str, description: str) -> secretsmanager.Secret:
        return secretsmanager.Secret(
            self,
            id,
            description=description,
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=64),
        )

    def _user(
        self, id: str, user_id: str, user_name: str, access: str, password: secretsmanager.Secret
    ) -> elasticache.CfnUser:
        return elasticache.CfnUser(
            self,
            id,
            engine="redis",
            user_id=user_id,
            user_name=user_name,
            access_string=access,
            # A dynamic reference: CloudFormation reads the secret at deploy time; the
            # template never holds the password.
            authentication_mode={"Type": "password", "Passwords": [password.secret_value.unsafe_unwrap()]},
        )

    def auth_token_env(self) -> dict[str, ecs.Secret]:
        """The default user's password as an ECS secret: injected at start, never in the task definition."""
        return {AUTH_TOKEN_ENV: ecs.Secret.from_secrets_manager(self.auth_token)}

    def worker_password_env(self) -> dict[str, ecs.Secret]:
        return {AUTH_TOKEN_ENV: ecs.Secret.from_secrets_manager(self.worker_password)}

    def worker_user_env(self) -> dict[str, str]:
        return {USERNAME_ENV: self.worker_user_name}

    @property
    def node_ids(self) -> list[str]:
        """The member clusters' ids, as ElastiCache names them: the CloudWatch dimension."""
        return [f"{self.replication_group_id}-{i:03d}" for i in range(1, NODES + 1)]
