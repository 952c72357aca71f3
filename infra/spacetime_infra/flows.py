"""Who may reach what: every security group and every rule between them, in one place.

The flows of docs/deployment-aws.md's picture, and no others:

    internet    -> ALB          443   (the only ingress from outside the VPC)
    ALB         -> API          5000
    API         -> Redis        6379
    dispatchers -> Redis        6379
    workers     -> Redis        6379  (the image task reads its PNG and stores its result)
    dispatchers -> scheduler    8786
    workers     -> scheduler    8786
    scheduler   -> workers      worker and nanny ports (the scheduler calls workers back)
    workers     -> workers      worker port (peers fetch each other's results)
    dispatchers -> workers      worker port (a bulk job's profile: the client asks each worker)
    tasks, worker hosts -> VPC endpoints 443, and S3's prefix list 443 (endpoints.py)

The scheduler's dashboard (8787) is reachable from nowhere: no load balancer serves it
and no group admits it (docs: reach it through ECS Exec port forwarding if needed). The
API does not reach the scheduler either: an unauthenticated Dask scheduler runs whatever
it is sent, so the internet-facing tier stays one hop away from it.

Egress is closed too: HTTPS to the VPC's interface endpoints and to S3's prefix list (its
gateway endpoint), nothing to 0.0.0.0/0. There is no NAT gateway either: no route out.
"""

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

API_PORT = 5000
REDIS_PORT = 6379
SCHEDULER_PORT = 8786
SCHEDULER_DASHBOARD_PORT = 8787  # served inside the task, for its health check only
WORKER_PORT = 8788
WORKER_DASHBOARD_PORT = 8789  # the same: the worker's /health, probed from inside its task
NANNY_PORT = 8790
HTTPS = 443


class Flows(Construct):
    def __init__(self, scope: Construct, id: str, vpc: ec2.IVpc, s3_prefix_list_id: str) -> None:
        super().__init__(scope, id)

        def group(name: str, description: str) -> ec2.SecurityGroup:
            return ec2.SecurityGroup(self, name, vpc=vpc, description=description, allow_all_outbound=False)

        self.alb = group("Alb", "SpaceTime load balancer: HTTPS from the internet, to the API tasks")
        self.api = group("Api", "SpaceTime API tasks")
        self.dispatchers = group("Dispatchers", "SpaceTime dispatcher tasks")
        self.scheduler = group("Scheduler", "SpaceTime Dask scheduler task")
        self.workers = group("Workers", "SpaceTime Dask worker tasks")
        self.redis = group("Redis", "SpaceTime ElastiCache Redis: from the API, dispatchers and workers only")
        self.worker_hosts = group("WorkerHosts", "SpaceTime worker EC2 instances (the ECS agent; no ingress)")
        self.endpoints = group("Endpoints", "SpaceTime VPC endpoints: HTTPS from the tasks and worker hosts")

        self.alb.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(HTTPS), "HTTPS from clients")
        self.api.connections.allow_from(self.alb, ec2.Port.tcp(API_PORT), "ALB to the API")
        for client in (self.api, self.dispatchers, self.workers):
            self.redis.connections.allow_from(client, ec2.Port.tcp(REDIS_PORT), "Redis clients")
        for client in (self.dispatchers, self.workers):
            self.scheduler.connections.allow_from(client, ec2.Port.tcp(SCHEDULER_PORT), "Dask clients and workers")
        self.workers.connections.allow_from(self.scheduler, ec2.Port.tcp(WORKER_PORT), "scheduler to workers")
        self.workers.connections.allow_from(self.scheduler, ec2.Port.tcp(NANNY_PORT), "scheduler to nannies")
        self.workers.connections.allow_internally(ec2.Port.tcp(WORKER_PORT), "workers fetch from each other")
        # distributed's Client.profile asks each worker for its samples (a bulk job's report).
        self.workers.connections.allow_from(self.dispatchers, ec2.Port.tcp(WORKER_PORT), "profiles from workers")

        s3 = ec2.Peer.prefix_list(s3_prefix_list_id)
        for tasks in (self.api, self.dispatchers, self.scheduler, self.workers, self.worker_hosts):
            self.endpoints.connections.allow_from(tasks, ec2.Port.tcp(HTTPS), "AWS APIs through the endpoints")
            tasks.add_egress_rule(s3, ec2.Port.tcp(HTTPS), "S3 through its gateway endpoint")
