"""Scaling on the work (the dispatchers' embedded metrics) and the alarms."""

import pytest

from spacetime_infra.metrics import KINDS, LANES
from tests.cfn import find, minimum_tasks, resources, target, text


def policy_for(template: dict, service_prefix: str) -> tuple[dict, dict]:
    """(scalable target, its one customized target-tracking configuration) for a service."""
    targets = resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    policies = resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    for target_id, scalable in targets.items():
        if service_prefix in text(scalable["ResourceId"]):
            (config,) = [
                p["TargetTrackingScalingPolicyConfiguration"]
                for p in policies.values()
                if target(p["ScalingTargetId"]) == target_id
            ]
            return scalable, config
    raise AssertionError(f"no scalable target for {service_prefix}")


def gauges(config: dict) -> tuple[set, str, dict]:
    """({(metric, lane)}, the returned expression, the task-count query)."""
    queries = config["CustomizedMetricSpecification"]["Metrics"]
    found, tasks = set(), None
    for query in queries:
        if "MetricStat" not in query:
            continue
        metric = query["MetricStat"]["Metric"]
        dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
        if metric["Namespace"] == "SpaceTime":
            assert query["MetricStat"]["Stat"] == "Maximum"  # every dispatcher prints the same figure
            found.add((metric["MetricName"], dimensions["Lane"]))
        else:
            assert (metric["Namespace"], metric["MetricName"]) == ("ECS/ContainerInsights", "RunningTaskCount")
            tasks = query
    (returned,) = [q for q in queries if q.get("ReturnData")]
    return found, returned["Expression"], tasks


def test_dispatchers_scale_on_jobs_queued_per_dispatcher(template, env_config):
    scalable, config = policy_for(template, "ServicesDispatchersService")
    assert (scalable["MinCapacity"], scalable["MaxCapacity"]) == (
        env_config["dispatchers"]["minTasks"],
        env_config["dispatchers"]["maxTasks"],
    )
    found, expression, tasks = gauges(config)
    assert found == {("Backlog", lane) for lane in LANES}
    assert expression.endswith("/ FILL(tasks, 1)") and tasks["Id"] == "tasks"
    assert config["TargetValue"] == env_config["dispatcherConcurrency"]


@pytest.mark.parametrize("lane", sorted(LANES))
def test_each_worker_pool_scales_on_its_own_lanes_backlog(template, env_config, lane):
    workers = env_config["workers"][lane]
    scalable, config = policy_for(template, f"Workers{lane.capitalize()}Service")
    assert (scalable["MinCapacity"], scalable["MaxCapacity"]) == (workers["minTasks"], workers["maxTasks"])
    found, expression, tasks = gauges(config)
    assert found == {(name, lane) for name in ("BacklogBlocks", "InFlight")}
    assert expression.count("FILL(m") == 2
    dimensions = {d["Name"]: d["Value"] for d in tasks["MetricStat"]["Metric"]["Dimensions"]}
    assert f"Workers{lane.capitalize()}Service" in text(dimensions["ServiceName"])
    assert config["TargetValue"] == workers["backlogPerWorker"]
    assert config["ScaleInCooldown"] > config["ScaleOutCooldown"]


def test_the_api_scales_on_requests_per_target_and_cpu(template, env_config):
    targets = resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    api_target = next(k for k, t in targets.items() if "ServicesApiService" in text(t["ResourceId"]))
    kinds = {}
    for policy in resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy").values():
        if target(policy["ScalingTargetId"]) == api_target:
            config = policy["TargetTrackingScalingPolicyConfiguration"]
            kinds[config["PredefinedMetricSpecification"]["PredefinedMetricType"]] = config
    assert set(kinds) == {"ALBRequestCountPerTarget", "ECSServiceAverageCPUUtilization"}
    assert kinds["ALBRequestCountPerTarget"]["TargetValue"] == env_config["apiRequestsPerTarget"]
    assert (targets[api_target]["MinCapacity"], targets[api_target]["MaxCapacity"]) == (
        env_config["api"]["minTasks"],
        env_config["api"]["maxTasks"],
    )


def alarms_by_metric(template: dict) -> dict[tuple[str, str], dict]:
    """{(metric name, the value of its first dimension as text): alarm} of single-metric alarms."""
    found = {}
    for alarm in resources(template, "AWS::CloudWatch::Alarm").values():
        if "MetricName" in alarm:
            dimensions = {d["Name"]: text(d["Value"]) for d in alarm["Dimensions"]}
            key = dimensions.get("ServiceName") or dimensions.get("TargetGroup") or next(iter(dimensions.values()))
            found[(alarm["MetricName"], key)] = alarm
    return found


def test_alarms_on_queue_wait_errors_and_redis_memory(template, env_config):
    thresholds = env_config["alarms"]
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    topic = next(iter(resources(template, "AWS::SNS::Topic")))
    assert all([target(a) for a in alarm["AlarmActions"]] == [topic] for alarm in alarms.values())
    by_metric = alarms_by_metric(template)
    for kind in KINDS:
        wait = by_metric[("QueueWait", kind)]
        assert (wait["Namespace"], wait["ExtendedStatistic"]) == ("SpaceTime", "p95")
        assert wait["Threshold"] == thresholds["queueWaitP95Seconds"][kind]
        assert wait["TreatMissingData"] == "notBreaching"  # no jobs, no figures
        errored = by_metric[("Errored", kind)]
        assert (errored["Statistic"], errored["Threshold"]) == ("Sum", thresholds["erroredJobsPer5Min"])
    memory = find({k: v for k, v in alarms.items() if "Metrics" in v}, "AlarmsRedisMemory")
    nodes = {
        q["MetricStat"]["Metric"]["Dimensions"][0]["Value"]
        for q in memory["Metrics"]
        if "MetricStat" in q and q["MetricStat"]["Metric"]["MetricName"] == "DatabaseMemoryUsagePercentage"
    }
    (redis,) = resources(template, "AWS::ElastiCache::ReplicationGroup").values()
    assert nodes == {f"{redis['ReplicationGroupId']}-001", f"{redis['ReplicationGroupId']}-002"}
    assert memory["Threshold"] == thresholds["redisMemoryPercent"]
    assert memory["TreatMissingData"] == "breaching"


def test_alarms_on_running_tasks_target_health_and_5xx(template, env_config):
    """Breakage that silences a metric is breaching: a service with no running task, a
    target group with no figure, dispatchers that stopped printing their gauges."""
    by_metric = alarms_by_metric(template)
    minimums = minimum_tasks(env_config)
    running = [
        (text(next(d["Value"] for d in a["Dimensions"] if d["Name"] == "ServiceName")), a)
        for a in resources(template, "AWS::CloudWatch::Alarm").values()
        if a.get("MetricName") == "RunningTaskCount"
    ]
    for prefix, minimum in minimums.items():
        (alarm,) = [a for service, a in running if prefix in service and a["ComparisonOperator"] == "LessThanThreshold"]
        assert (alarm["Threshold"], alarm["TreatMissingData"]) == (minimum, "breaching"), prefix
    for lane in LANES:
        service_prefix = f"Workers{lane.capitalize()}Service"
        (at_max,) = [
            a
            for service, a in running
            if service_prefix in service and a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        ]
        assert (at_max["Statistic"], at_max["Threshold"]) == ("Minimum", env_config["workers"][lane]["maxTasks"])
    names = {k[0]: a for k, a in by_metric.items()}
    assert names["UnHealthyHostCount"]["TreatMissingData"] == "breaching"
    assert names["HealthyHostCount"]["Threshold"] == 1 and names["HealthyHostCount"]["TreatMissingData"] == "breaching"
    silent = [a for (name, lane), a in by_metric.items() if name == "Backlog"]
    assert {text(a["Dimensions"][0]["Value"]) for a in silent} == set(LANES)
    assert all(a["Statistic"] == "SampleCount" and a["TreatMissingData"] == "breaching" for a in silent)
    errors = find(resources(template, "AWS::CloudWatch::Alarm"), "AlarmsServerErrors")
    metrics = {q["MetricStat"]["Metric"]["MetricName"] for q in errors["Metrics"] if "MetricStat" in q}
    assert metrics == {"HTTPCode_Target_5XX_Count", "HTTPCode_ELB_5XX_Count"}


def test_alarms_reach_a_person_in_production(template, env_name, env_config):
    subscriptions = resources(template, "AWS::SNS::Subscription")
    emails = [s["Endpoint"] for s in subscriptions.values() if s["Protocol"] == "email"]
    if env_name == "production":
        assert emails == [env_config["alarms"]["email"]] and emails[0]
    else:
        assert emails == ([env_config["alarms"]["email"]] if env_config["alarms"]["email"] else [])
