"""CloudWatch metrics without a new service: embedded metric format (EMF) lines on stdout.

On AWS the container's stdout goes to CloudWatch Logs, which turns each EMF line into
metrics (namespace ``SpaceTime``); infra/ scales dispatchers and workers on them and
alarms on them. Elsewhere the lines are off (settings.cloudwatch_metrics).

- per ended job, dimension Kind: QueueWait, LeadTime (seconds), Errored (0 or 1);
- every 30 s, gauges by Lane and by Lane and Client (registered clients only): Backlog
  (jobs waiting), BacklogBlocks (their blocks), InFlight (jobs running). Several
  dispatchers print the same figures: read them with the Maximum statistic.
"""

import json
import sys
import time
from typing import Any

from backend.telemetry.timing import Timing

NAMESPACE = "SpaceTime"


def job_line(timing: Timing) -> dict[str, Any]:
    values = {"QueueWait": timing.queue_wait_s or 0.0, "LeadTime": timing.lead_s or 0.0}
    return _line(
        {"Kind": timing.kind},
        [("QueueWait", "Seconds"), ("LeadTime", "Seconds"), ("Errored", "Count")],
        {**values, "Errored": int(timing.status == "errored")},
    )


def gauge_line(dimensions: dict[str, str], backlog: int, backlog_blocks: int, in_flight: int) -> dict[str, Any]:
    """Queue figures of one lane (dimensions {"Lane"}) or lane and client ({"Lane", "Client"})."""
    return _line(
        dimensions,
        [("Backlog", "Count"), ("BacklogBlocks", "Count"), ("InFlight", "Count")],
        {"Backlog": backlog, "BacklogBlocks": backlog_blocks, "InFlight": in_flight},
    )


def emit(line: dict[str, Any]) -> None:
    """One JSON object per line on stdout, where the log driver picks it up."""
    sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _line(dimensions: dict[str, str], metrics: list[tuple[str, str]], values: dict[str, Any]) -> dict[str, Any]:
    return {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": NAMESPACE,
                    "Dimensions": [list(dimensions)],
                    "Metrics": [{"Name": name, "Unit": unit} for name, unit in metrics],
                }
            ],
        },
        **dimensions,
        **values,
    }
