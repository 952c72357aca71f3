"""Scaling on the work (the dispatchers' embedded metrics) and the alarms."""

from tests.cfn import find, resources, target, text

LANES = {"interactive", "bulk"}
KINDS = {"randomize", "even-sum"}


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


def test_workers_scale_on_blocks_queued_and_jobs_running_per_worker(template, env_config):
    workers = env_config["workers"]
    scalable, config = policy_for(template, "WorkersService")
    assert (scalable["MinCapacity"], scalable["MaxCapacity"]) == (workers["minTasks"], workers["maxTasks"])
    found, expression, _ = gauges(config)
    assert found == {(name, lane) for name in ("BacklogBlocks", "InFlight") for lane in LANES}
    assert expression.count("FILL(m") == 4
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


def test_alarms_on_queue_wait_errors_and_redis_memory(template, env_config):
    thresholds = env_config["alarms"]
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    topic = next(iter(resources(template, "AWS::SNS::Topic")))
    assert all([target(a) for a in alarm["AlarmActions"]] == [topic] for alarm in alarms.values())
    by_metric: dict[tuple[str, str], dict] = {}
    for alarm in alarms.values():
        if "MetricName" in alarm:
            (dimension,) = alarm["Dimensions"]
            by_metric[(alarm["MetricName"], dimension["Value"])] = alarm
    for kind in KINDS:
        wait = by_metric[("QueueWait", kind)]
        assert (wait["Namespace"], wait["ExtendedStatistic"]) == ("SpaceTime", "p95")
        assert wait["Threshold"] == thresholds["queueWaitP95Seconds"][kind]
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
