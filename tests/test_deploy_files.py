"""The deployment files are valid as their own tools read them. Fast and offline.

docker-compose.yml through the real compose binary, the Dockerfiles through hadolint,
.travis.yml through Travis' JSON schema, environment.yml against constraints.txt.
"""

import importlib.resources
import json
import re
import subprocess
import tomllib

import pytest
import yaml

from backend.api.app import create_app
from backend.core.settings import Settings
from backend.run.cli import build_parser
from backend.run.supervisor import STOP_MARGIN_S
from tests.compose import COMPOSE_FILE, compose, compose_config, duration_s, tool
from tests.paths import REPO

DOCKERFILES = [REPO / "backend" / "Dockerfile", REPO / "compute" / "Dockerfile"]
# conda-forge names that differ from the PyPI names in constraints.txt.
CONDA_TO_PYPI = {
    "dask-core": "dask",
    "redis-py": "redis",
    "uvicorn-standard": "uvicorn",
    "msgpack-python": "msgpack",
    "python-isal": "isal",
}


def norm(name: str) -> str:
    """PEP 503 normalization: Flask, flask and prometheus_client/prometheus-client compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            pins[norm(name)] = version
    return pins


def runtime_dependencies() -> list[str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return [norm(re.split(r"[\[<>=!~; ]", dep)[0]) for dep in deps]


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config()


# --- docker-compose.yml ---------------------------------------------------------------


def test_compose_binary_is_the_real_one(tmp_path):
    """Guards the check below: some wrappers named docker-compose exit 0 whatever the file."""
    assert (
        "Docker Compose version"
        in subprocess.run([tool("docker-compose"), "version"], capture_output=True, text=True).stdout
    )
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  web:\n    image: x\n    depends_on: {db: {condition: service_healthy}}\n")
    assert compose("config", "--quiet", file=broken).returncode != 0


def test_compose_config_is_valid():
    result = compose("config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_compose_has_every_service(config):
    assert set(config["services"]) >= {
        "redis",
        "minio",
        "createbucket",
        "scheduler",
        "worker",
        "api",
        "dispatcher",
        "jupyter",
    }


def test_healthy_dependencies_have_a_healthcheck(config):
    services = config["services"]
    for name, service in services.items():
        for dep, how in (service.get("depends_on") or {}).items():
            if how["condition"] == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{name} waits on {dep}'s healthcheck"
            if how["condition"] == "service_completed_successfully":
                # A one-shot that restarted would never "complete".
                assert services[dep].get("restart", "no") == "no", dep


def test_python_services_depend_on_what_they_use(config):
    services = config["services"]
    waits = {name: set(service.get("depends_on") or {}) for name, service in services.items()}
    assert {"redis", "createbucket"} <= waits["api"]
    assert {"redis", "scheduler", "createbucket"} <= waits["dispatcher"]
    assert {"redis", "scheduler"} <= waits["worker"] and {"redis", "scheduler"} <= waits["worker-interactive"]


def test_build_contexts_dockerfiles_and_targets_exist(config):
    built = {name: s["build"] for name, s in config["services"].items() if "build" in s}
    assert set(built) == {"scheduler", "worker", "worker-interactive", "api", "dispatcher", "jupyter"}
    for name, build in built.items():
        context = REPO / build["context"]
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert context.is_dir() and dockerfile.is_file(), name
        if target := build.get("target"):
            assert re.search(rf"^FROM .+ AS {target}$", dockerfile.read_text(), re.M | re.I), (name, target)


def test_services_read_the_settings_they_need(config):
    services = config["services"]
    backend = {
        "REDIS_URL",
        "DASK_SCHEDULER_ADDRESS",
        "SPACETIME_DASHBOARD_URL",
        "SPACETIME_UPLOADS_URL",
        "SPACETIME_REPORTS_URL",
        "SPACETIME_ALLOWED_URL_PREFIXES",
        "SPACETIME_S3_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "SPACETIME_RESULT_TTL_S",
        "SPACETIME_AUTH",
        "NUMBA_CACHE_DIR",
    }
    for name in ("api", "dispatcher"):
        assert backend <= set(services[name]["environment"]), name
    assert {"SPACETIME_API_HOST", "SPACETIME_API_PORT"} <= set(services["api"]["environment"])
    # Workers read uploads from S3 themselves and compile kernels into a writable cache.
    for pool in ("worker", "worker-interactive"):
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "NUMBA_CACHE_DIR"} <= set(services[pool]["environment"])
    # keys mode is compose's default: a shared system needs identities (issue: many clients).
    assert services["api"]["environment"]["SPACETIME_AUTH"] == "keys"
    assert json.loads(services["api"]["environment"]["SPACETIME_ALLOWED_URL_PREFIXES"])


def test_published_ports_and_replicas(config):
    services = config["services"]

    def published(name):
        return {int(p["target"]) for p in services[name].get("ports", [])}

    # What a user opens, and nothing else: Redis, the scheduler's 8786, the workers'
    # dashboards and MinIO's S3 port stay on the compose network.
    assert {name: published(name) for name in services if published(name)} == {
        "api": {5000},
        "scheduler": {8787},
        "jupyter": {8888},
        "minio": {9001},
    }
    # Scaled services publish nothing: replicas would fight over the host port.
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["dispatcher"]["deploy"]["replicas"] == 2


def test_published_ports_listen_on_the_hosts_loopback_only(config):
    """JupyterLab runs code and the dashboard shows every task: not for the whole network."""
    ports = [(name, p) for name, s in config["services"].items() for p in s.get("ports", [])]
    assert ports
    for name, port in ports:
        assert port.get("host_ip") == "127.0.0.1", (name, port)
        assert port["published"] == str(port["target"]), (name, port)  # the ports the docs name


def test_docker_waits_out_the_dispatchers_shutdown_grace(config):
    """Docker SIGKILLs at stop_grace_period (10 s by default): after the dispatcher's own grace."""
    dispatcher = config["services"]["dispatcher"]
    grace_s = float(dispatcher["environment"]["SPACETIME_SHUTDOWN_GRACE_S"])
    assert duration_s(dispatcher["stop_grace_period"]) >= grace_s + STOP_MARGIN_S


def test_worker_memory_limit_fits_its_container(config):
    worker = config["services"]["worker"]
    dask_limit = worker["command"][worker["command"].index("--memory-limit") + 1]
    assert dask_limit.endswith("GiB")
    container_limit = int(worker["deploy"]["resources"]["limits"]["memory"])
    # The nanny must act (restart at 95 %) before the kernel's OOM killer does.
    assert float(dask_limit[:-3]) * 2**30 < container_limit


def test_compose_commands_match_the_runtime_contract(config):
    services = config["services"]
    assert services["api"]["command"] == ["spacetime", "api"]
    assert services["dispatcher"]["command"] == ["spacetime", "dispatcher"]
    assert services["scheduler"]["command"][:2] == ["dask", "scheduler"]
    for pool, resource in (("worker", "bulk=2"), ("worker-interactive", "interactive=1")):
        worker = services[pool]["command"]
        assert worker[:3] == ["dask", "worker", "tcp://scheduler:8786"]
        assert worker[worker.index("--preload") + 1] == "compute.preload"
        assert worker[worker.index("--preload-nanny") + 1] == "compute.retire"
        assert worker[worker.index("--resources") + 1] == resource
        assert int(resource.split("=")[1]) == int(worker[worker.index("--nthreads") + 1])  # a slot a thread


def test_services_that_lose_the_scheduler_or_redis_come_back(config):
    """A dask worker exits when its scheduler goes; compose must start it again (and the
    others that a crash can take down)."""
    services = config["services"]
    for name in ("scheduler", "worker", "worker-interactive", "api", "dispatcher"):
        assert services[name]["restart"] == "unless-stopped", name


def test_no_real_secrets_in_compose():
    text = COMPOSE_FILE.read_text()
    # Credentials only as ${VAR:-local-default} interpolations.
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|ACCESS_KEY)\w*:", line):
            assert "${" in line, line


# --- Dockerfiles ------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_finds_no_warning(dockerfile):
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_conventions(dockerfile):
    text = dockerfile.read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[.\d]*-slim", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    # Every final stage runs as uid 10001, never root.
    assert users and all(user == "10001:10001" for user in users)
    assert "-c constraints.txt" in text and "HEALTHCHECK" in text
    # Dependencies install before the source is copied (the layer cache survives code edits).
    assert text.index("pip install --no-cache-dir -c constraints.txt") < text.index("COPY backend/")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_pins_match_constraints(dockerfile):
    pins = constraints()
    for name, version in re.findall(r"([A-Za-z0-9_.\-]+)==([\w.]+)", dockerfile.read_text()):
        if norm(name) in pins:
            assert pins[norm(name)] == version, f"{name}=={version} but constraints.txt says {pins[norm(name)]}"


def test_dockerignore_keeps_the_context_small():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", "tests", "notebooks", "infra"} <= ignored


# --- .travis.yml ----------------------------------------------------------------------


def test_travis_matches_its_schema():
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.travis", str(REPO / ".travis.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_travis_has_no_unknown_top_level_keys():
    """The schema lets unknown keys through; Travis ignores them, silently."""
    schema = json.loads(
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("travis.json").read_text()
    )
    known = set(schema["definitions"]["job"]["properties"])
    for part in schema["allOf"]:
        known |= set(part.get("properties", {}))
    travis = yaml.safe_load((REPO / ".travis.yml").read_text())
    assert set(travis) - known == set()


def test_travis_runs_the_tests_and_builds_both_images():
    travis = yaml.safe_load((REPO / ".travis.yml").read_text())
    assert travis["language"] == "python" and str(travis["python"]) == "3.11"
    assert "redis" in travis["services"]
    assert "make test" in travis["script"]
    build = [job for job in travis["jobs"]["include"] if "docker" in job.get("services", [])]
    commands = "\n".join(build[0]["script"])
    assert "-f backend/Dockerfile" in commands and "-f compute/Dockerfile" in commands


# --- environment.yml ------------------------------------------------------------------


def test_environment_pins_equal_constraints():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge"
    conda = [dep for dep in env["dependencies"] if isinstance(dep, str)]
    assert "python=3.11" in conda
    pins = constraints()
    pinned = {}
    for dep in conda:
        if "==" in dep:
            name, version = dep.split("==")
            pinned[norm(CONDA_TO_PYPI.get(name, name))] = version
    for name, version in pinned.items():
        assert pins.get(name) == version, f"environment.yml pins {name}=={version}, constraints.txt {pins.get(name)}"
    # Every runtime dependency comes from conda-forge, pinned; pip only installs the project.
    assert set(runtime_dependencies()) <= set(pinned)
    pip_lines = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert pip_lines == ["-c constraints.txt", "-e ."]


# --- the AWS stack (infra/, synthesized into infra/cdk.out by `make infra-check`) ---------
# infra/.venv has the CDK but not the backend, so these checks of its containers against
# the backend's own Settings and command line live here.

CDK_OUT = REPO / "infra" / "cdk.out"


def stack_containers() -> list[tuple[str, dict]]:
    """(stack, container definition) of every task definition in the synthesized stacks."""
    templates = sorted(CDK_OUT.glob("SpaceTime-*.template.json"))
    if not templates:
        pytest.skip("infra/cdk.out has no templates: run `make infra-check` first (`make test` does)")
    found = []
    for path in templates:
        for resource in json.loads(path.read_text())["Resources"].values():
            if resource["Type"] == "AWS::ECS::TaskDefinition":
                found += [(path.stem, c) for c in resource["Properties"]["ContainerDefinitions"]]
    return found


def test_every_spacetime_variable_of_the_stack_is_a_setting():
    """A misspelt SPACETIME_ variable would be ignored (extra="ignore") and the default used."""
    fields = Settings.model_fields
    seen = set()
    for stack, definition in stack_containers():
        for variable in (e["Name"] for e in definition.get("Environment", [])):
            if variable.startswith("SPACETIME_"):
                name = variable.removeprefix("SPACETIME_").lower()
                assert name in fields, f"{stack} {definition['Name']}: {variable} is no setting"
                assert fields[name].validation_alias is None, f"{variable}: the setting is read under another name"
                seen.add(variable)
    assert {"SPACETIME_AUTH", "SPACETIME_UPLOADS_URL", "SPACETIME_SHUTDOWN_GRACE_S"} <= seen


def test_every_container_command_is_parsed_by_the_real_command_line():
    """`spacetime ...` by the backend's argparse parser, `dask worker|scheduler ...` by
    distributed's own click commands, without running them."""
    from distributed.cli.dask_scheduler import main as dask_scheduler
    from distributed.cli.dask_worker import main as dask_worker

    parsed = set()
    for stack, definition in stack_containers():
        command = definition.get("Command") or []
        where = f"{stack} {definition['Name']}: {command}"
        if command[:1] == ["spacetime"]:
            try:
                args = build_parser().parse_args(command[1:])
            except SystemExit:
                pytest.fail(f"{where} is refused by the spacetime command line")
            assert callable(args.run), where
        elif command[:2] in (["dask", "worker"], ["dask", "scheduler"]):
            cli = dask_worker if command[1] == "worker" else dask_scheduler
            cli.make_context(f"dask {command[1]}", list(command[2:]))  # raises on an unknown option
        else:
            pytest.fail(f"{where}: neither a spacetime nor a dask command")
        parsed.add(" ".join(command[:2]))
    assert parsed == {"spacetime api", "spacetime dispatcher", "dask worker", "dask scheduler"}


def test_the_workers_redis_user_allows_exactly_what_an_image_task_does(redis, redis_url, cat_png, monkeypatch):
    """The stack's ACL for the workers' ElastiCache user, on a real redis-server: an image
    task (compute/stored.py, as a worker runs it with REDIS_USERNAME and REDIS_AUTH_TOKEN)
    reads its input and stores its staged result, in pieces (of 64 KiB here: several); the
    same user may touch nothing else."""
    from redis.exceptions import NoPermissionError

    from compute import redis_values
    from compute.stored import REDIS_PASSWORD_ENV, REDIS_USERNAME_ENV, randomize_stored

    monkeypatch.setattr(redis_values, "PIECE_BYTES", 64 * 1024)

    users = [
        resource["Properties"]
        for path in sorted(CDK_OUT.glob("SpaceTime-*.template.json"))
        for resource in json.loads(path.read_text())["Resources"].values()
        if resource["Type"] == "AWS::ElastiCache::User" and resource["Properties"]["UserName"] != "default"
    ]
    if not users:
        pytest.skip("infra/cdk.out has no templates: run `make infra-check` first (`make test` does)")
    for user in users:
        assert {word[1:] for word in user["AccessString"].split() if word[0] == "+"} == set(redis_values.COMMANDS)
        name, password = user["UserName"], "a-worker-password-for-this-test"
        redis.execute_command("ACL", "SETUSER", name, "reset", f">{password}", *user["AccessString"].split())
        try:
            redis_values.write_value(redis, "input:tok", cat_png, 60)
            monkeypatch.setenv(REDIS_USERNAME_ENV, name)
            monkeypatch.setenv(REDIS_PASSWORD_ENV, password)
            randomize_stored(redis_url, "input:tok", "staged:tok:d:1", 60)
            staged = redis_values.read_value(redis, "staged:tok:d:1")
            assert staged is not None and staged.startswith(b"\x89PNG") and 0 < redis.ttl("staged:tok:d:1") <= 60
            worker = type(redis).from_url(redis_url, username=name, password=password)
            for command in (("GET", "result:tok"), ("LPUSH", "tasks", "x"), ("DEL", "input:tok"), ("KEYS", "*")):
                with pytest.raises(NoPermissionError):
                    worker.execute_command(*command)
            worker.close()
        finally:
            redis.execute_command("ACL", "DELUSER", name)


def stack_health_paths() -> set[str]:
    """The API paths that the stack's container health check and target group probe."""
    paths = set()
    for path in sorted(CDK_OUT.glob("SpaceTime-*.template.json")):
        for resource in json.loads(path.read_text())["Resources"].values():
            properties = resource.get("Properties", {})
            if resource["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup":
                paths.add(properties["HealthCheckPath"])
            elif resource["Type"] == "AWS::ECS::TaskDefinition":
                for definition in properties["ContainerDefinitions"]:
                    check = " ".join(definition.get("HealthCheck", {}).get("Command", []))
                    paths |= set(re.findall(r"http://127\.0\.0\.1:5000(/\w+)", check))
    if not paths:
        pytest.skip("infra/cdk.out has no templates: run `make infra-check` first (`make test` does)")
    return paths


def test_the_stacks_health_checks_name_routes_of_the_api():
    """/livez (the container: the process only) and /readyz (the load balancer: Redis too)."""
    # The served document: FastAPI nests included routers, so app.routes does not list them.
    routes = set(create_app().openapi()["paths"])
    assert stack_health_paths() <= routes


def test_the_runbooks_client_registration_parses():
    """docs/deployment-aws.md registers clients by the SHA-256 of a key made elsewhere, so
    that no key reaches a log: the command it runs is one the real command line takes."""
    runbook = (REPO / "docs" / "deployment-aws.md").read_text()
    (command,) = set(re.findall(r'"command":(\[[^\]]*\])', runbook))
    argv = json.loads(command.replace('"\'"$HASH"\'"', json.dumps("0" * 64)))
    assert argv[:3] == ["spacetime", "clients", "add"]
    args = build_parser().parse_args(argv[1:])
    assert args.key_sha256 == "0" * 64


def test_stack_dispatchers_get_their_whole_shutdown_grace():
    """ECS kills a container its stop timeout after SIGTERM: a dispatcher needs its grace
    (the stack's SPACETIME_SHUTDOWN_GRACE_S, or the setting's default) and the hand-back."""
    default = Settings.model_fields["shutdown_grace_s"].default
    dispatchers = [(s, d) for s, d in stack_containers() if d.get("Command") == ["spacetime", "dispatcher"]]
    assert dispatchers
    for stack, definition in dispatchers:
        env = {e["Name"]: e["Value"] for e in definition.get("Environment", [])}
        grace = float(env.get("SPACETIME_SHUTDOWN_GRACE_S", default))
        assert definition["StopTimeout"] >= grace + STOP_MARGIN_S, stack
