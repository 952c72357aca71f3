"""Alarms on what users feel and what can take the system down, to one SNS topic (and
its e-mail subscriber: required in production, config.py).

- Queue wait p95, per job kind: clients waiting for a dispatcher or a worker (the
  fairness figure of docs/deployment-aws.md; the thresholds differ because an image
  should start within seconds and a 5 GB sum may wait minutes).
- Errored jobs, per kind.
- Redis memory: with ``noeviction``, a full Redis refuses new jobs.
- Running tasks below each service's minimum (a crash loop, an image that does not pull,
  no capacity), the API's targets (unhealthy, or none healthy), server errors at the
  load balancer, each worker pool held at its maximum (the backlog outgrows the cluster).
- The dispatchers' gauges going silent: the scaling policies read them, so silence means
  no dispatcher runs or the metric contract broke, and the workers stop following the work.

Missing data is breaching where a figure is always reported while things work (task
counts, target health, the gauges, Redis memory), and not breaching where silence is
the normal idle state (per-job figures, 5xx counts).
"""

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from spacetime_infra.config import EnvironmentConfig
from spacetime_infra.metrics import KINDS, LANES, job_metric, lane_gauge
from spacetime_infra.services import Services

PERIOD = Duration.minutes(5)
# 5xx answers (the API's and the load balancer's own) in 5 minutes: a few are a client's
# bad luck during a deploy; more are a fault.
SERVER_ERRORS_PER_5_MIN = 10
BREACHING = cloudwatch.TreatMissingData.BREACHING
NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING
ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
BELOW = cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


class Alarms(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: EnvironmentConfig,
        redis_node_ids: list[str],
        services: Services,
        workers: dict[str, ecs.Ec2Service],
    ) -> None:
        super().__init__(scope, id)
        thresholds = config.alarms
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=f"SpaceTime {config.name} alarms",
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
            enforce_ssl=True,
        )
        if thresholds.email:
            self.topic.add_subscription(subscriptions.EmailSubscription(thresholds.email))

        for kind in KINDS:
            self._alarm(
                f"QueueWaitP95-{kind}",
                job_metric("QueueWait", kind, "p95", PERIOD),
                threshold=thresholds.queue_wait_p95_seconds[kind],
                description=f"95% of {kind} jobs waited less than this many seconds for a dispatcher",
                missing=NOT_BREACHING,  # no jobs, no figures: quiet is not a fault
            )
            self._alarm(
                f"Errored-{kind}",
                job_metric("Errored", kind, cloudwatch.Stats.SUM, PERIOD),
                threshold=thresholds.errored_jobs_per_5_min,
                description=f"{kind} jobs that ended errored in 5 minutes",
                missing=NOT_BREACHING,
            )
        # Either node may be the primary after a failover: alarm on the fuller of the two.
        memory = cloudwatch.MathExpression(
            expression="MAX([" + ", ".join(f"n{i}" for i in range(len(redis_node_ids))) + "])",
            using_metrics={
                f"n{i}": cloudwatch.Metric(
                    namespace="AWS/ElastiCache",
                    metric_name="DatabaseMemoryUsagePercentage",
                    dimensions_map={"CacheClusterId": node},
                    statistic=cloudwatch.Stats.MAXIMUM,
                    period=PERIOD,
                )
                for i, node in enumerate(redis_node_ids)
            },
            label="Redis memory used (%)",
            period=PERIOD,
        )
        self._alarm(
            "RedisMemory",
            memory,
            threshold=thresholds.redis_memory_percent,
            description="Redis memory use, in percent: at 100 it refuses new jobs (noeviction)",
            missing=BREACHING,  # ElastiCache reports it every minute: silence is a broken group
        )
        self._service_alarms(config, services, workers)

    def _service_alarms(self, config: EnvironmentConfig, services: Services, workers: dict[str, ecs.Ec2Service]):
        minimums = {
            "Api": (services.api, config.api.min_tasks),
            "Dispatchers": (services.dispatchers, config.dispatchers.min_tasks),
            "Scheduler": (services.scheduler, 1),
        }
        for lane, service in workers.items():
            pool = getattr(config.workers, lane)
            minimums[f"{lane.capitalize()}Workers"] = (service, pool.min_tasks)
            self._alarm(
                f"{lane.capitalize()}WorkersAtMaximum",
                running_tasks(service, cloudwatch.Stats.MINIMUM),
                threshold=pool.max_tasks,
                comparison=AT_LEAST,
                description=f"{lane} workers held at their maximum ({pool.max_tasks}): the lane's backlog "
                "outgrows the pool; raise maxTasks or look at who sends the work",
                missing=NOT_BREACHING,  # no count at all is the running-tasks alarm's
            )
        for name, (service, minimum) in minimums.items():
            self._alarm(
                f"{name}RunningTasks",
                running_tasks(service, cloudwatch.Stats.MAXIMUM),
                threshold=minimum,
                comparison=BELOW,
                description=f"{name}: fewer running tasks than its minimum ({minimum}) for 5 minutes",
                missing=BREACHING,  # Container Insights counts every service every minute
            )
        target_group, load_balancer = services.target_group, services.load_balancer
        self._alarm(
            "ApiUnhealthyTargets",
            target_group.metrics.unhealthy_host_count(statistic=cloudwatch.Stats.MINIMUM, period=PERIOD),
            threshold=0,
            description="API tasks failing the load balancer's readiness check (/readyz: Redis unreachable)",
            missing=BREACHING,
        )
        self._alarm(
            "ApiNoHealthyTarget",
            target_group.metrics.healthy_host_count(statistic=cloudwatch.Stats.MAXIMUM, period=PERIOD),
            threshold=1,
            comparison=BELOW,
            description="No API task passes the readiness check: every request fails",
            missing=BREACHING,
        )
        server_errors = cloudwatch.MathExpression(
            expression="FILL(target, 0) + FILL(elb, 0)",
            using_metrics={
                "target": target_group.metrics.http_code_target(elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=PERIOD),
                "elb": load_balancer.metrics.http_code_elb(elbv2.HttpCodeElb.ELB_5XX_COUNT, period=PERIOD),
            },
            label="5xx answers",
            period=PERIOD,
        )
        self._alarm(
            "ServerErrors",
            server_errors,
            threshold=SERVER_ERRORS_PER_5_MIN,
            description="5xx answers from the API and the load balancer in 5 minutes",
            missing=NOT_BREACHING,
        )
        for lane in LANES:
            self._alarm(
                f"GaugesMissing-{lane}",
                lane_gauge("Backlog", lane).with_(statistic=cloudwatch.Stats.SAMPLE_COUNT, period=PERIOD),
                threshold=1,
                comparison=BELOW,
                description=f"No dispatcher printed the {lane} lane's Backlog gauge: no dispatcher runs, "
                "or the metric names no longer match (scaling then holds the worker count)",
                missing=BREACHING,
            )

    def _alarm(
        self,
        id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        description: str,
        missing: cloudwatch.TreatMissingData,
        comparison: cloudwatch.ComparisonOperator = ABOVE,
    ) -> None:
        alarm = cloudwatch.Alarm(
            self,
            id,
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data=missing,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))


def running_tasks(service: ecs.BaseService, statistic: str) -> cloudwatch.Metric:
    """Container Insights' count of the service's running tasks."""
    return cloudwatch.Metric(
        namespace="ECS/ContainerInsights",
        metric_name="RunningTaskCount",
        dimensions_map={"ClusterName": service.cluster.cluster_name, "ServiceName": service.service_name},
        statistic=statistic,
        period=PERIOD,
    )
