"""The Dask workers: two pools, each an ECS service on EC2 with capacity of its own.

As in docker-compose.yml and ``spacetime up``: the interactive pool's workers offer the
``interactive`` resource (image tasks need it), the bulk pool's the ``bulk`` one (block
tasks need it), one unit per thread, so an image never waits behind a running block.
Each pool scales on its own lane's backlog (scaling.py).

- interactive: On-Demand only, at least one worker per zone: images start within seconds
  and are never interrupted;
- bulk: an Auto Scaling group per purchase option, each an ECS capacity provider with
  managed scaling: ECS places the first ``onDemandBase`` tasks on On-Demand instances and
  the rest in the ratio ``spotWeight`` : 1 on Spot.

One task fills one instance (its CPU and memory are the instance's, less the agent's
share), so a worker's threads and memory limit match the machine.

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
from spacetime_infra.config import EnvironmentConfig, WorkerPool
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
INTERACTIVE = "interactive"
BULK = "bulk"
# Deployments start the new workers before stopping old ones: at 1 to 3 workers, ECS's
# rounding (up for the minimum, down for the maximum) left 75 % / 125 % no room to do
# either (aws/containers-roadmap#485). 200 % lets it start one at any count.
MIN_HEALTHY_PERCENT = 100
MAX_HEALTHY_PERCENT = 200


class Workers(Construct):
    """Both pools; ``pools`` maps each lane to its service."""

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
        self.instance_roles: list[iam.Role] = []
        self.groups: list[autoscaling.AutoScalingGroup] = []
        self.pools: dict[str, ecs.Ec2Service] = {}
        for lane, pool in ((INTERACTIVE, config.workers.interactive), (BULK, config.workers.bulk)):
            name = lane.capitalize()
            providers = [(self._capacity(f"{name}OnDemand", cluster, flows, pool, spot=False), pool.on_demand_base, 1)]
            if pool.spot_weight:
                providers.append((self._capacity(f"{name}Spot", cluster, flows, pool, spot=True), 0, pool.spot_weight))
            task = self._task(name, lane, pool, config, roles, images, scheduler_address, cache)
            self.pools[lane] = ecs.Ec2Service(
                self,
                f"{name}Service",
                cluster=cluster,
                task_definition=task,
                desired_count=pool.min_tasks,
                security_groups=[flows.workers],
                vpc_subnets=subnets(PRIVATE),
                capacity_provider_strategies=[
                    ecs.CapacityProviderStrategy(
                        capacity_provider=provider.capacity_provider_name, base=base or None, weight=weight
                    )
                    for provider, base, weight in providers
                ],
                placement_strategies=[ecs.PlacementStrategy.spread_across(ecs.BuiltInAttributes.AVAILABILITY_ZONE)],
                circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
                min_healthy_percent=MIN_HEALTHY_PERCENT,
                max_healthy_percent=MAX_HEALTHY_PERCENT,
            )

    def _task(self, name, lane, pool: WorkerPool, config, roles, images, scheduler_address, cache):
        task = ecs.Ec2TaskDefinition(self, f"{name}Task", network_mode=ecs.NetworkMode.AWS_VPC, task_role=roles.workers)
        nthreads = pool.cpu // 1024
        memory_limit_mib = int(pool.memory_mib * DASK_MEMORY_SHARE)
        add_app_container(
            task,
            "worker",
            config,
            image=images.compute,
            command=[
                *("dask", "worker", scheduler_address),
                *("--nthreads", str(nthreads), "--memory-limit", f"{memory_limit_mib}MiB"),
                # One unit per thread, as compose gives them (compute/preload.py lowers the
                # bulk workers' CPU priority on seeing theirs).
                *("--resources", f"{lane}={nthreads}"),
                *("--worker-port", str(WORKER_PORT), "--nanny-port", str(NANNY_PORT)),
                *("--dashboard-address", f":{WORKER_DASHBOARD_PORT}"),
                *("--preload", "compute.preload", "--preload-nanny", "compute.retire"),
            ],
            environment={"NUMBA_CACHE_DIR": "/tmp/numba-cache", "AWS_DEFAULT_REGION": Aws.REGION}
            | cache.worker_user_env(),
            # The image task reaches Redis with the URL its dispatcher gives it, which carries
            # no password (it passes through the scheduler): the worker adds its own user's.
            secrets=cache.worker_password_env(),
            stop_timeout_s=WORKER_STOP_TIMEOUT_S,
            cpu=pool.cpu,
            memory_limit_mib=pool.memory_mib,
            health_check=python_health_check(WORKER_DASHBOARD_PORT, "/health"),
        )
        return task

    def _capacity(
        self, name: str, cluster: ecs.Cluster, flows: Flows, pool: WorkerPool, *, spot: bool
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
        if spot:
            # The agent drains the instance (SIGTERM, so workers retire) on the two-minute
            # interruption notice. Written here: the capacity provider's spot_instance_draining
            # writes it only for groups with a spotPrice, which mixed groups have not (aws-cdk#24360).
            launch_template.user_data.add_commands("echo ECS_ENABLE_SPOT_INSTANCE_DRAINING=true >> /etc/ecs/ecs.config")
        group = autoscaling.AutoScalingGroup(
            self,
            f"{name}Group",
            vpc=cluster.vpc,
            vpc_subnets=subnets(PRIVATE),
            min_capacity=0,
            # Room for a deployment's new workers beside the old at the pool's maximum (one
            # task per instance, MAX_HEALTHY_PERCENT): else a deploy at the peak would stall.
            max_capacity=pool.max_tasks * MAX_HEALTHY_PERCENT // 100,
            mixed_instances_policy=autoscaling.MixedInstancesPolicy(
                launch_template=launch_template,
                launch_template_overrides=[
                    autoscaling.LaunchTemplateOverrides(instance_type=ec2.InstanceType(instance_type))
                    for instance_type in pool.instance_types
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
            target_capacity_percent=100,
            instance_warmup_period=Duration.minutes(3).to_seconds(),
        )
        cluster.add_asg_capacity_provider(provider)
        self.instance_roles.append(role)
        self.groups.append(group)
        return provider
