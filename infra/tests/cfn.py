"""Small readers for synthesized CloudFormation templates."""

import re
from pathlib import Path

INFRA_ROOT = Path(__file__).resolve().parents[1]


def resources(template: dict, type_: str) -> dict[str, dict]:
    """{logical id: properties} of every resource of ``type_``."""
    return {k: r.get("Properties", {}) for k, r in template["Resources"].items() if r["Type"] == type_}


def target(value) -> str:
    """The logical id a ``Ref`` or ``Fn::GetAtt`` points at."""
    if "Ref" in value:
        return value["Ref"]
    return value["Fn::GetAtt"][0]


def construct(logical_id: str, parent: str) -> str:
    """The construct name in a logical id: ``FlowsApi007A1AE4`` under ``Flows`` is ``Api``."""
    match = re.fullmatch(rf"{parent}([A-Za-z]+?)[0-9A-F]{{8}}", logical_id)
    assert match, f"{logical_id} is not a direct child of {parent}"
    return match.group(1)


def only(mapping: dict) -> tuple[str, dict]:
    assert len(mapping) == 1, f"expected one, found {sorted(mapping)}"
    return next(iter(mapping.items()))


def find(mapping: dict[str, dict], prefix: str) -> dict:
    """The one entry whose logical id starts with ``prefix``."""
    return only({k: v for k, v in mapping.items() if k.startswith(prefix)})[1]


def container(template: dict, task_prefix: str) -> dict:
    """The single container definition of the task definition named ``task_prefix...``."""
    task = find(resources(template, "AWS::ECS::TaskDefinition"), task_prefix)
    (definition,) = task["ContainerDefinitions"]
    return definition


def environment(definition: dict) -> dict:
    return {e["Name"]: e["Value"] for e in definition.get("Environment", [])}


def text(value) -> str:
    """A template value flattened to text (Fn::Join parts joined, references as <id>)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(text(p) for p in parts)
    if isinstance(value, dict) and ("Ref" in value or "Fn::GetAtt" in value):
        return f"<{target(value)}>"
    return str(value)


def minimum_tasks(env_config: dict) -> dict[str, int]:
    """Each ECS service's logical id prefix -> its smallest task count in this environment."""
    return {
        "ServicesApiService": env_config["api"]["minTasks"],
        "ServicesDispatchersService": env_config["dispatchers"]["minTasks"],
        "ServicesSchedulerService": 1,
        "WorkersInteractiveService": env_config["workers"]["interactive"]["minTasks"],
        "WorkersBulkService": env_config["workers"]["bulk"]["minTasks"],
    }
