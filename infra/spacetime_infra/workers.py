"""The Dask workers: an ECS service on EC2, On-Demand for the base, Spot beyond it.

Two Auto Scaling groups, each an ECS capacity provider with managed scaling: ECS places
the first ``onDemandBase`` worker tasks on On-Demand instances and the rest in the ratio
``spotWeight`` : 1 on Spot, and the groups grow and shrink to fit the tasks. One task
fills one instance (its CPU and memory are the instance's, less the agent's share), so a
worker's threads and memory limit match the machine.

Stopping a worker never loses work: ECS sends SIGTERM on scale-in, on deployments and
(Spot draining) on an interruption notice; ``--preload-nanny compute.retire`` turns that
into a retirement (results copied to other workers, an expected departure) before the
process closes, within the container's 120 s stop timeout.
"""

from aws_cdk import Aws, Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from constructs import Construct

from spacetime_infra.cache import Cache
from spacetime_infra.config import EnvironmentConfig
from spacetime_infra.config import Workers as WorkersConfig
from spacetime_infra.containers import Images, add_app_container, python_health_check
from spacetime_infra.flows import NANNY_PORT, WORKER_DASHBOARD_PORT, WORKER_PORT, Flows
from spacetime_infra.network import PRIVATE, subnets
from spacetime_infra.roles import TaskRoles

# ECS's ceiling for a container's stop timeout: compute.retire's 60 s plus dask's close.
WORKER_STOP_TIMEOUT_S = 120
# Dask's --memory-limit as a share of the task's memory: the nanny restarts a runaway
# worker before the kernel's OOM killer ends the container (as in docker-compose.yml).
DASK_MEMORY_SHARE = 0.85
ROOT_VOLUME_GIB = 100  # images, and Dask's spill to disk under /tmp


class Workers(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        cluster: ecs.Cluster,
        flows: Flows,
        roles: TaskRoles,
        images: Images,
        scheduler_address: str,
        cache: Cache,
    ) -> None:
        super().__init__(scope, id)
        workers = config.workers
        self.instance_roles: list[iam.Role] = []
        self.groups: list[autoscaling.AutoScalingGroup] = []
        self.on_demand = self._capacity("OnDemand", cluster, flows, workers, spot=False)
        self.spot = self._capacity("Spot", cluster, flows, workers, spot=True)

        task = ecs.Ec2TaskDefinition(self, "Task", network_mode=ecs.NetworkMode.AWS_VPC, task_role=roles.workers)
        nthreads = workers.cpu // 1024
        memory_limit_mib = int(workers.memory_mib * DASK_MEMORY_SHARE)
        add_app_container(
            task,
            "worker",
            config,
            image=images.compute,
            command=[
                *("dask", "worker", scheduler_address),
                *("--nthreads", str(nthreads), "--memory-limit", f"{memory_limit_mib}MiB"),
                *("--worker-port", str(WORKER_PORT), "--nanny-port", str(NANNY_PORT)),
                *("--dashboard-address", f":{WORKER_DASHBOARD_PORT}"),
                *("--preload", "compute.preload", "--preload-nanny", "compute.retire"),
            ],
            environment={"NUMBA_CACHE_DIR": "/tmp/numba-cache", "AWS_DEFAULT_REGION": Aws.REGION},
            # The image task reaches Redis with the URL its dispatcher gives it, which carries
            # no password (it passes through the scheduler): the worker adds this one.
            secrets=cache.auth_token_env(),
            stop_timeout_s=WORKER_STOP_TIMEOUT_S,
            cpu=workers.cpu,
            memory_limit_mib=workers.memory_mib,
            health_check=python_health_check(WORKER_DASHBOARD_PORT, "/health"),
        )
        self.service = ecs.Ec2Service(
            self,
            "Service",
            cluster=cluster,
            task_definition=task,
            desired_count=workers.min_tasks,
            security_groups=[flows.workers],
            vpc_subnets=subnets(PRIVATE),
            capacity_provider_strategies=[
                ecs.CapacityProviderStrategy(
                    capacity_provider=self.on_demand.capacity_provider_name, base=workers.on_demand_base, weight=1
                ),
                ecs.CapacityProviderStrategy(
                    capacity_provider=self.spot.capacity_provider_name, weight=workers.spot_weight
                ),
            ],
            placement_strategies=[ecs.PlacementStrategy.spread_across(ecs.BuiltInAttributes.AVAILABILITY_ZONE)],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            # Replace workers a quarter at a time: each retires its data to the others first.
            min_healthy_percent=75,
            max_healthy_percent=125,
        )

    def _capacity(
        self, name: str, cluster: ecs.Cluster, flows: Flows, workers: WorkersConfig, *, spot: bool
    ) -> ecs.AsgCapacityProvider:
        role = iam.Role(self, f"{name}InstanceRole", assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"))
        launch_template = ec2.LaunchTemplate(
            self,
            f"{name}LaunchTemplate",
            machine_image=ecs.EcsOptimizedImage.amazon_linux2023(),
            role=role,
            security_group=flows.worker_hosts,
            user_data=ec2.UserData.for_linux(),
            require_imdsv2=True,
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/xvda",
                    volume=ec2.BlockDeviceVolume.ebs(
                        ROOT_VOLUME_GIB, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3
                    ),
                )
            ],
        )
        # Tasks in awsvpc mode get their credentials from ECS, never from the instance's role.
        launch_template.user_data.add_commands("echo ECS_AWSVPC_BLOCK_IMDS=true >> /etc/ecs/ecs.config")
        group = autoscaling.AutoScalingGroup(
            self,
            f"{name}Group",
            vpc=cluster.vpc,
            vpc_subnets=subnets(PRIVATE),
            min_capacity=0,
            max_capacity=workers.max_tasks,
            mixed_instances_policy=autoscaling.MixedInstancesPolicy(
                launch_template=launch_template,
                launch_template_overrides=[
                    autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(instance_type))
                    for instance_type in workers.instance_types
                ],
                instances_distribution=autoscaling.InstancesDistribution(
                    on_demand_base_capacity=0,
                    on_demand_percentage_above_base_capacity=0 if spot else 100,
                    on_demand_allocation_strategy=autoscaling.OnDemandAllocationStrategy.PRIORITIZED,
                    spot_allocation_strategy=autoscaling.SpotAllocationStrategy.PRICE_CAPACITY_OPTIMIZED,
                ),
            ),
            # Spot: start a replacement as soon as AWS signals a higher interruption risk.
            capacity_rebalance=spot,
            new_instances_protected_from_scale_in=True,
        )
        provider = ecs.AsgCapacityProvider(
            self,
            f"{name}Capacity",
            auto_scaling_group=group,
            enable_managed_scaling=True,
            enable_managed_termination_protection=True,
            enable_managed_draining=True,
            spot_instance_draining=spot,
            target_capacity_percent=100,
            instance_warmup_period=Duration.minutes(3).to_seconds(),
        )
        cluster.add_asg_capacity_provider(provider)
        self.instance_roles.append(role)
        self.groups.append(group)
        return provider
