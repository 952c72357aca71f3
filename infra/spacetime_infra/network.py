"""The VPC: two Availability Zones, public subnets for the load balancer only, private
subnets for every task, isolated subnets for Redis.

No NAT gateway and no route to the internet from inside: the workers decode PNGs that
anyone may send and hold a Redis password, so what they and the other tasks may reach
outside the VPC is AWS's APIs through VPC endpoints (endpoints.py) and nothing else. S3
goes through a gateway endpoint: the workers read uploads at the speed of the VPC.

The zones are named in cdk.json rather than looked up, so synthesis needs no AWS account.
"""

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from spacetime_infra.config import EnvironmentConfig
from spacetime_infra.log_groups import log_group

PUBLIC = "public"
PRIVATE = "private"  # tasks: out to AWS APIs through the endpoints only, nothing in from outside
DATA = "data"  # Redis: no route out at all


class Network(Construct):
    def __init__(self, scope: Construct, id: str, config: EnvironmentConfig) -> None:
        super().__init__(scope, id)
        flow_log_group = log_group(self, "FlowLogs", config.log_retention_days)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr("10.40.0.0/16"),
            availability_zones=config.availability_zones,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(name=PUBLIC, subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name=PRIVATE, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20),
                ec2.SubnetConfiguration(name=DATA, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
            restrict_default_security_group=False,
        )


def subnets(name: str) -> ec2.SubnetSelection:
    return ec2.SubnetSelection(subnet_group_name=name)
