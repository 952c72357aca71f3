"""The VPC endpoints: the only way out of the private subnets.

Each AWS API a task or a worker instance calls, and no other: image pulls (ECR's API and
registry; the layers come from S3, through the gateway endpoint of network.py), the log
driver (CloudWatch Logs, which also carries the dispatchers' metrics), the Redis secret
(Secrets Manager), the ECS agent on the worker instances (ecs, ecs-agent, ecs-telemetry)
and STS (the SDKs' regional credential calls). A call to anything else has no route.
"""

from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from spacetime_infra.network import PRIVATE, subnets

SERVICES = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
}


class Endpoints(Construct):
    def __init__(self, scope: Construct, id: str, vpc: ec2.IVpc, security_group: ec2.ISecurityGroup) -> None:
        super().__init__(scope, id)
        for name, service in SERVICES.items():
            ec2.InterfaceVpcEndpoint(
                self,
                name,
                vpc=vpc,
                service=service,
                subnets=subnets(PRIVATE),
                security_groups=[security_group],
                private_dns_enabled=True,
                open=False,  # who may call them is flows.py's, stated there with the others
            )
