"""The ECS cluster and its Fargate services: the API behind the load balancer, the
dispatchers, and the Dask scheduler that Cloud Map names for the others.

docker-compose.yml runs the same commands with the same settings; what changes is where
they point (ElastiCache over TLS, S3, the scheduler's private DNS name) and that the API
requires API keys (``SPACETIME_AUTH=keys``).
"""

import json

from aws_cdk import Aws, Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_servicediscovery as servicediscovery
from constructs import Construct

from spacetime_infra.cache import NODES, Cache
from spacetime_infra.config import EnvironmentConfig, TaskSize
from spacetime_infra.containers import Images, add_app_container, python_health_check
from spacetime_infra.flows import API_PORT, HTTPS, SCHEDULER_DASHBOARD_PORT, SCHEDULER_PORT, Flows
from spacetime_infra.network import PRIVATE, PUBLIC, subnets
from spacetime_infra.roles import TaskRoles
from spacetime_infra.storage import REPORTS, UPLOADS, Storage

# The backend reads one REDIS_URL; the token must not sit in the task definition, so ECS
# injects it from Secrets Manager and this shell line assembles the URL at start.
WITH_REDIS_URL = [
    "/bin/sh",
    "-c",
    'export REDIS_URL="rediss://:$REDIS_AUTH_TOKEN@$REDIS_HOST:$REDIS_PORT/0"; unset REDIS_AUTH_TOKEN; exec "$@"',
    "with-redis-url",
]
# The dispatcher's own SIGTERM grace (SPACETIME_SHUTDOWN_GRACE_S) lets running jobs
# finish, then hands the rest back to the queue (10 s more at most: the supervisor's
# STOP_MARGIN_S); ECS waits longer than both before it kills the process.
SHUTDOWN_GRACE_S = 30
DISPATCHER_STOP_TIMEOUT_S = 60
SCHEDULER_DNS_NAME = "scheduler"
# Liveness and readiness: ECS restarts a task whose process is stuck (/livez touches
# nothing else); the load balancer stops sending requests to a task that cannot reach
# Redis (/readyz), without ECS replacing the fleet during a Redis failover.
LIVENESS_PATH = "/livez"
READINESS_PATH = "/readyz"
# The API requires API keys, and acknowledges a job only once every replica has it (Redis
# WAIT: backend/jobs/store.py), so an ElastiCache failover loses no job a client got a 201 for.
API_ENV = {"SPACETIME_AUTH": "keys", "SPACETIME_REDIS_MIN_REPLICAS": str(NODES - 1)}
# Paths the load balancer answers 404 itself: /metrics names every client (it is for
# scrapers inside the VPC), and no route of the API takes a percent-encoded path (tokens
# are hex), so an encoded /metrics cannot slip past the first pattern either.
HIDDEN_PATHS = ["/metrics*", "*%*"]


class Services(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        vpc: ec2.IVpc,
        flows: Flows,
        storage: Storage,
        cache: Cache,
        roles: TaskRoles,
        images: Images,
    ) -> None:
        super().__init__(scope, id)
        self.config = config
        self.cluster = ecs.Cluster(
            self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED
        )  # Container Insights: RunningTaskCount, which the backlog-per-task scaling divides by
        self.namespace = servicediscovery.PrivateDnsNamespace(
            self, "Namespace", name=f"{config.name}.spacetime.internal", vpc=vpc
        )
        self.scheduler_address = f"tcp://{SCHEDULER_DNS_NAME}.{self.namespace.namespace_name}:{SCHEDULER_PORT}"
        self.scheduler = self._scheduler(images, roles, flows)

        backend_env = {
            "REDIS_HOST": cache.host,
            "REDIS_PORT": cache.port,
            "DASK_SCHEDULER_ADDRESS": self.scheduler_address,
            "SPACETIME_UPLOADS_URL": storage.url(UPLOADS),
            "SPACETIME_REPORTS_URL": storage.url(REPORTS),
            # Jobs may name only uploads: the roles can read nothing else.
            "SPACETIME_ALLOWED_URL_PREFIXES": json.dumps([storage.url(UPLOADS) + "/"]),
            # The dashboard is published nowhere (flows.py): no link to show.
            "SPACETIME_DASHBOARD_URL": "",
            # Bulk job loops per dispatcher (the scaling target of jobs queued per dispatcher).
            "SPACETIME_BULK_CONCURRENCY": str(config.dispatcher_concurrency),
            # Dispatchers print the EMF lines that scaling.py and alarms.py read (backend/telemetry/cloudwatch.py).
            "SPACETIME_CLOUDWATCH_METRICS": "true",
            "AWS_DEFAULT_REGION": Aws.REGION,
            "NUMBA_CACHE_DIR": "/tmp/numba-cache",
        }
        redis_secret = cache.auth_token_env()
        self.api, self.load_balancer, self.target_group = self._api(
            images, roles, flows, storage, backend_env | API_ENV, redis_secret
        )
        self.dispatchers = self._dispatchers(images, roles, flows, backend_env, redis_secret)

    def _fargate_task(self, name: str, size: TaskSize, role) -> ecs.FargateTaskDefinition:
        return ecs.FargateTaskDefinition(
            self, f"{name}Task", cpu=size.cpu, memory_limit_mib=size.memory_mib, task_role=role
        )

    def _fargate_service(self, name: str, task: ecs.TaskDefinition, group: ec2.ISecurityGroup, **options):
        return ecs.FargateService(
            self,
            name,
            cluster=self.cluster,
            task_definition=task,
            security_groups=[group],
            vpc_subnets=subnets(PRIVATE),
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            **options,
        )

    def _scheduler(self, images: Images, roles: TaskRoles, flows: Flows) -> ecs.FargateService:
        task = self._fargate_task("Scheduler", self.config.scheduler, roles.scheduler)
        add_app_container(
            task,
            "scheduler",
            self.config,
            image=images.scheduler,
            command=[
                *("dask", "scheduler", "--host", "0.0.0.0", "--port", str(SCHEDULER_PORT)),
                *("--dashboard-address", f":{SCHEDULER_DASHBOARD_PORT}"),
            ],
            environment={},
            stop_timeout_s=30,
            port_mappings=[ecs.PortMapping(container_port=SCHEDULER_PORT)],
            health_check=python_health_check(SCHEDULER_DASHBOARD_PORT, "/health"),
        )
        # Exactly one scheduler, never two at once (a second would split the workers):
        # a deployment stops the old task before starting the new one. Its image is pinned
        # to the dask version (containers.py), so app deploys leave it running.
        return self._fargate_service(
            "Scheduler",
            task,
            flows.scheduler,
            desired_count=1,
            min_healthy_percent=0,
            max_healthy_percent=100,
            cloud_map_options=ecs.CloudMapOptions(
                name=SCHEDULER_DNS_NAME,
                cloud_map_namespace=self.namespace,
                dns_record_type=servicediscovery.DnsRecordType.A,
                dns_ttl=Duration.seconds(10),
            ),
        )

    def _api(self, images, roles, flows, storage, environment, secrets):
        task = self._fargate_task("Api", self.config.api, roles.api)
        add_app_container(
            task,
            "api",
            self.config,
            image=images.backend,
            entry_point=WITH_REDIS_URL,
            command=["spacetime", "api"],
            environment=environment | {"SPACETIME_API_HOST": "0.0.0.0", "SPACETIME_API_PORT": str(API_PORT)},
            secrets=secrets,
            stop_timeout_s=30,
            port_mappings=[ecs.PortMapping(container_port=API_PORT)],
            health_check=python_health_check(API_PORT, LIVENESS_PATH),
        )
        service = self._fargate_service(
            "Api",
            task,
            flows.api,
            desired_count=self.config.api.min_tasks,
            min_healthy_percent=100,
            max_healthy_percent=200,
            health_check_grace_period=Duration.seconds(60),
        )
        load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=self.cluster.vpc,
            internet_facing=True,
            security_group=flows.alb,
            vpc_subnets=subnets(PUBLIC),
            drop_invalid_header_fields=True,
        )
        load_balancer.log_access_logs(storage.logs, prefix="alb")
        listener = load_balancer.add_listener(
            "Https",
            port=HTTPS,
            protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[elbv2.ListenerCertificate.from_arn(self.config.certificate_arn)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            open=False,  # the one public rule is flows.py's, stated there with the others
        )
        target_group = listener.add_targets(
            "Api",
            port=API_PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[service],
            # /readyz answers 503 while the task cannot reach Redis: out of rotation.
            health_check=elbv2.HealthCheck(
                path=READINESS_PATH, healthy_http_codes="200", interval=Duration.seconds(15)
            ),
            deregistration_delay=Duration.seconds(30),
        )
        listener.add_action(
            "Hidden",
            priority=1,
            conditions=[elbv2.ListenerCondition.path_patterns(HIDDEN_PATHS)],
            action=elbv2.ListenerAction.fixed_response(
                404, content_type="application/json", message_body='{"message": "not found"}'
            ),
        )
        return service, load_balancer, target_group

    def _dispatchers(self, images, roles, flows, environment, secrets) -> ecs.FargateService:
        task = self._fargate_task("Dispatchers", self.config.dispatchers, roles.dispatchers)
        # No port and no health check, as in compose: a dead dispatcher is noticed through
        # its Redis lease and its jobs are requeued by the others.
        add_app_container(
            task,
            "dispatcher",
            self.config,
            image=images.backend,
            entry_point=WITH_REDIS_URL,
            command=["spacetime", "dispatcher"],
            environment=environment | {"SPACETIME_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S)},
            secrets=secrets,
            stop_timeout_s=DISPATCHER_STOP_TIMEOUT_S,
        )
        return self._fargate_service(
            "Dispatchers",
            task,
            flows.dispatchers,
            desired_count=self.config.dispatchers.min_tasks,
            min_healthy_percent=100,
            max_healthy_percent=200,
        )
