"""The figures the dispatchers publish, as CloudWatch sees them.

Each dispatcher prints CloudWatch embedded-metric-format (EMF) JSON lines to stdout; the
awslogs driver ships them to the dispatchers' log group, and CloudWatch extracts them
into the ``SpaceTime`` namespace. No agent, no extra service. These names are the
contract with the backend:

- every 30 s, per dispatcher, gauges by ``Lane`` (and by ``Lane`` and ``Client``):
  ``Backlog`` (jobs queued), ``BacklogBlocks`` (blocks queued; an image job is one
  block), ``InFlight`` (jobs running). Every dispatcher prints the same figures, so they
  are read with the Maximum statistic, never summed across dispatchers.
- per ended job, by ``Kind``: ``QueueWait`` and ``LeadTime`` (seconds), ``Errored`` (0 or 1).

One environment per account and region: the namespace and dimensions do not name the
environment.
"""

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

NAMESPACE = "SpaceTime"
# Every name the dispatchers print (backend/cloudwatch.py; backend/telemetry/cloudwatch.py
# after the backend's split): infra/tests/test_metrics.py reads that file and compares.
GAUGES = ("Backlog", "BacklogBlocks", "InFlight")
JOB_METRICS = ("QueueWait", "LeadTime", "Errored")
LANES = ("interactive", "bulk")
# The job kinds of backend/core/kinds.py (infra/tests/test_metrics.py compares).
KINDS = ("randomize", "even-sum")
GAUGE_PERIOD = Duration.minutes(1)  # two 30 s samples per period; Maximum takes the later peak


def lane_gauge(name: str, lane: str) -> cloudwatch.Metric:
    """``Backlog``, ``BacklogBlocks`` or ``InFlight`` of one lane."""
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"Lane": lane},
        statistic=cloudwatch.Stats.MAXIMUM,
        period=GAUGE_PERIOD,
    )


def job_metric(name: str, kind: str, statistic: str, period: Duration) -> cloudwatch.Metric:
    """``QueueWait``, ``LeadTime`` or ``Errored`` of one job kind."""
    return cloudwatch.Metric(
        namespace=NAMESPACE, metric_name=name, dimensions_map={"Kind": kind}, statistic=statistic, period=period
    )
