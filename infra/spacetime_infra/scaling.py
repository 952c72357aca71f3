"""Autoscaling on the work itself.

- API: target tracking on the load balancer's requests per target (and CPU, for requests
  that are few but heavy, such as large uploads).
- Dispatchers: jobs queued per dispatcher, held near ``SPACETIME_BULK_CONCURRENCY``
  (each dispatcher has about one more round of jobs waiting).
- Workers, each pool on its own lane: (the lane's blocks queued + jobs running) per
  worker, held near the pool's ``backlogPerWorker``. Queued blocks say how much work
  waits; running jobs keep a floor while the pool is busy with work that has left the
  queue. A burst of 5 GB sums grows the bulk pool and leaves the interactive one alone.

The last two are the "backlog per task" pattern: a metric-math expression over the
dispatchers' gauges divided by the service's running tasks (Container Insights'
RunningTaskCount). The CDK's target-tracking construct takes single metrics only, so
those policies are written at the CloudFormation level.
"""

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from constructs import Construct

from spacetime_infra.config import EnvironmentConfig
from spacetime_infra.metrics import LANES, NAMESPACE

SCALE_OUT_COOLDOWN = Duration.seconds(60)
# Scaling in is slower: a worker that leaves retires its data first, and a burst that
# pauses for a minute should find its workers still there.
SCALE_IN_COOLDOWN = Duration.minutes(5)
API_CPU_PERCENT = 60


def scale_api(
    service: ecs.FargateService, target_group: elbv2.ApplicationTargetGroup, config: EnvironmentConfig
) -> None:
    scaling = service.auto_scale_task_count(min_capacity=config.api.min_tasks, max_capacity=config.api.max_tasks)
    scaling.scale_on_request_count(
        "Requests",
        requests_per_target=config.api_requests_per_target,
        target_group=target_group,
        scale_out_cooldown=SCALE_OUT_COOLDOWN,
        scale_in_cooldown=SCALE_IN_COOLDOWN,
    )
    scaling.scale_on_cpu_utilization(
        "Cpu",
        target_utilization_percent=API_CPU_PERCENT,
        scale_out_cooldown=SCALE_OUT_COOLDOWN,
        scale_in_cooldown=SCALE_IN_COOLDOWN,
    )


def scale_dispatchers(scope: Construct, service: ecs.BaseService, config: EnvironmentConfig) -> None:
    _scale_on_backlog(
        scope,
        "DispatcherBacklog",
        service,
        min_tasks=config.dispatchers.min_tasks,
        max_tasks=config.dispatchers.max_tasks,
        gauges=[("Backlog", lane) for lane in LANES],
        per_task=config.dispatcher_concurrency,
    )


def scale_workers(scope: Construct, pools: dict[str, ecs.BaseService], config: EnvironmentConfig) -> None:
    """``pools``: {lane: its worker service}."""
    for lane, service in pools.items():
        pool = getattr(config.workers, lane)
        _scale_on_backlog(
            scope,
            f"{lane.capitalize()}WorkerBacklog",
            service,
            min_tasks=pool.min_tasks,
            max_tasks=pool.max_tasks,
            gauges=[(name, lane) for name in ("BacklogBlocks", "InFlight")],
            per_task=pool.backlog_per_worker,
        )


def _scale_on_backlog(
    scope: Construct,
    id: str,
    service: ecs.BaseService,
    *,
    min_tasks: int,
    max_tasks: int,
    gauges: list[tuple[str, str]],
    per_task: int,
) -> appscaling.CfnScalingPolicy:
    """Keep sum(gauges) / running tasks near ``per_task``."""
    target = appscaling.ScalableTarget(
        scope,
        f"{id}Target",
        service_namespace=appscaling.ServiceNamespace.ECS,
        scalable_dimension="ecs:service:DesiredCount",
        resource_id=f"service/{service.cluster.cluster_name}/{service.service_name}",
        min_capacity=min_tasks,
        max_capacity=max_tasks,
    )
    queries = [_stat(f"m{i}", NAMESPACE, name, {"Lane": lane}, "Maximum") for i, (name, lane) in enumerate(gauges)]
    queries.append(
        _stat(
            "tasks",
            "ECS/ContainerInsights",
            "RunningTaskCount",
            {"ClusterName": service.cluster.cluster_name, "ServiceName": service.service_name},
            "Average",
        )
    )
    # A gauge nobody printed this minute counts as 0 (an idle system scales in); a missing
    # task count as 1 (the figure errs high, towards scaling out).
    work = " + ".join(f"FILL(m{i}, 0)" for i in range(len(gauges)))
    queries.append(
        appscaling.CfnScalingPolicy.TargetTrackingMetricDataQueryProperty(
            id="per_task", expression=f"({work}) / FILL(tasks, 1)", label="work per task", return_data=True
        )
    )
    return appscaling.CfnScalingPolicy(
        scope,
        id,
        policy_name=f"{id}PerTask",
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.scalable_target_id,
        target_tracking_scaling_policy_configuration=appscaling.CfnScalingPolicy.TargetTrackingScalingPolicyConfigurationProperty(
            target_value=per_task,
            customized_metric_specification=appscaling.CfnScalingPolicy.CustomizedMetricSpecificationProperty(
                metrics=queries
            ),
            scale_out_cooldown=SCALE_OUT_COOLDOWN.to_seconds(),
            scale_in_cooldown=SCALE_IN_COOLDOWN.to_seconds(),
        ),
    )


def _stat(id: str, namespace: str, name: str, dimensions: dict[str, str], stat: str):
    policy = appscaling.CfnScalingPolicy
    return policy.TargetTrackingMetricDataQueryProperty(
        id=id,
        return_data=False,
        metric_stat=policy.TargetTrackingMetricStatProperty(
            stat=stat,
            metric=policy.TargetTrackingMetricProperty(
                namespace=namespace,
                metric_name=name,
                dimensions=[
                    policy.TargetTrackingMetricDimensionProperty(name=k, value=v) for k, v in dimensions.items()
                ],
            ),
        ),
    )
