"""Alarms on what users feel and what can take the system down, to one SNS topic.

- Queue wait p95, per job kind: clients waiting for a dispatcher or a worker (the
  fairness figure of docs/deployment-aws.md; the thresholds differ because an image
  should start within seconds and a 5 GB sum may wait minutes).
- Errored jobs, per kind.
- Redis memory: with ``noeviction``, a full Redis refuses new jobs.
"""

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from spacetime_infra.config import EnvironmentConfig
from spacetime_infra.metrics import KINDS, job_metric

PERIOD = Duration.minutes(5)


class Alarms(Construct):
    def __init__(self, scope: Construct, id: str, *, config: EnvironmentConfig, redis_node_ids: list[str]) -> None:
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
            )
            self._alarm(
                f"Errored-{kind}",
                job_metric("Errored", kind, cloudwatch.Stats.SUM, PERIOD),
                threshold=thresholds.errored_jobs_per_5_min,
                description=f"{kind} jobs that ended errored in 5 minutes",
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
        )

    def _alarm(self, id: str, metric: cloudwatch.IMetric, *, threshold: float, description: str) -> None:
        alarm = cloudwatch.Alarm(
            self,
            id,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            # No jobs, no figures: quiet is not a fault.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=description,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
