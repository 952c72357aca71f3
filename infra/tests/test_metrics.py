"""The metric names infra/ reads are the ones the dispatchers print.

A renamed metric would leave the scaling policies without data (they then hold the
current count) and the alarms quiet. The backend prints its EMF lines in
backend/telemetry/cloudwatch.py, read here as text (infra/.venv has no backend to import).
"""

import json
import re

from spacetime_infra.metrics import GAUGES, JOB_METRICS, KINDS, NAMESPACE
from tests.cfn import INFRA_ROOT

BACKEND_MODULE = "backend/telemetry/cloudwatch.py"
KINDS_MODULE = "backend/core/kinds.py"


def printed_by_backend() -> tuple[str, set[str]]:
    """(namespace, metric names) of the backend's EMF module: each metric is declared
    there as a ("Name", "Unit") pair."""
    source = (INFRA_ROOT.parent / BACKEND_MODULE).read_text()
    namespace = re.search(r'^NAMESPACE = "([^"]+)"', source, re.MULTILINE).group(1)
    names = set(re.findall(r'\("(\w+)", "(?:Seconds|Count|Milliseconds|Bytes|None)"\)', source))
    return namespace, names


def test_infra_names_what_the_backend_prints():
    namespace, names = printed_by_backend()
    assert namespace == NAMESPACE
    assert names == set(GAUGES) | set(JOB_METRICS)


def test_infra_knows_every_kind_the_backend_declares():
    """Queue-wait alarms and dashboards are per kind: a new kind needs its threshold."""
    source = (INFRA_ROOT.parent / KINDS_MODULE).read_text()
    assert set(re.findall(r'^    name="([^"]+)",$', source, re.MULTILINE)) == set(KINDS)


def test_the_stack_reads_only_printed_metrics(template):
    _, names = printed_by_backend()
    used = set()

    def walk(value):
        if isinstance(value, dict):
            if value.get("Namespace") == NAMESPACE and "MetricName" in value:
                used.add(value["MetricName"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(template["Resources"])
    assert used and used <= names, used - names
    assert json.dumps(template).count(f'"Namespace": "{NAMESPACE}"') > 0
