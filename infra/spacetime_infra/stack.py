"""One environment of SpaceTime Analytics: every resource of docs/deployment-aws.md."""

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from spacetime_infra.alarms import Alarms
from spacetime_infra.cache import Cache
from spacetime_infra.config import EnvironmentConfig, ImagesConfig
from spacetime_infra.containers import Images
from spacetime_infra.endpoints import Endpoints
from spacetime_infra.flows import Flows
from spacetime_infra.nag import acknowledge_accepted_findings
from spacetime_infra.network import Network
from spacetime_infra.roles import TaskRoles
from spacetime_infra.scaling import scale_api, scale_dispatchers, scale_workers
from spacetime_infra.services import Services
from spacetime_infra.storage import Storage
from spacetime_infra.workers import Workers


class SpaceTimeStack(Stack):
    def __init__(self, scope: Construct, config: EnvironmentConfig, images: ImagesConfig, **kwargs) -> None:
        super().__init__(scope, config.stack_name, **kwargs)
        network = Network(self, "Network", config)
        flows = Flows(self, "Flows", network.vpc, config.s3_prefix_list_id)
        Endpoints(self, "Endpoints", network.vpc, flows.endpoints)
        storage = Storage(self, "Storage")
        roles = TaskRoles(self, "Roles", storage)
        cache = Cache(
            self,
            "Cache",
            vpc=network.vpc,
            security_group=flows.redis,
            node_type=config.redis_node_type,
            name=f"spacetime-{config.name}",
        )
        image_tags = Images(self, "Images", images, config.name, config.image_tag)
        services = Services(
            self,
            "Services",
            config=config,
            vpc=network.vpc,
            flows=flows,
            storage=storage,
            cache=cache,
            roles=roles,
            images=image_tags,
        )
        workers = Workers(
            self,
            "Workers",
            config=config,
            cluster=services.cluster,
            flows=flows,
            roles=roles,
            images=image_tags,
            scheduler_address=services.scheduler_address,
            cache=cache,
        )
        scale_api(services.api, services.target_group, config)
        scale_dispatchers(self, services.dispatchers, config)
        scale_workers(self, workers.pools, config)
        Alarms(
            self,
            "Alarms",
            config=config,
            redis_node_ids=cache.node_ids,
            services=services,
            workers=workers.pools,
        )
        acknowledge_accepted_findings(
            flows=flows, storage=storage, roles=roles, cache=cache, services=services, workers=workers
        )

        # Point the DNS name of the certificate at this (an alias record).
        CfnOutput(self, "LoadBalancerDns", value=services.load_balancer.load_balancer_dns_name)
        CfnOutput(self, "Bucket", value=storage.bucket.bucket_name)
        CfnOutput(self, "Cluster", value=services.cluster.cluster_name)
