"""docker-compose.yml's commands and settings run the system, without a Docker engine.

Each service's ``command`` and ``environment`` from the compose file start here as local
processes (redis, scheduler, worker, api, dispatchers); MinIO is replaced by a moto S3
server with the bucket that ``createbucket`` would make. Then the seed's curl flow and an
even-sum upload go through them. A typo in a flag, a setting the code does not read under
that name, or a healthcheck that cannot pass fails here, not on someone's laptop.
"""

import io
import random
import signal
import subprocess

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from PIL import Image

from tests.compose import LocalNetwork, compose_config, duration_s
from tests.paths import REPO
from tests.processes import Processes
from tests.servers import free_port
from tests.waiting import wait_status

CAT_PNG = REPO / "tests" / "fixtures" / "cat.png"
START_TIMEOUT_S = 45.0
# The container ports of the compose network: Redis, scheduler, its dashboard, the two
# pools' worker dashboards, the API, MinIO.
CONTAINER_PORTS = (6379, 8786, 8787, 8789, 8790, 5000, 9000)


@pytest.fixture(scope="module")
def services():
    return compose_config()["services"]


@pytest.fixture
def s3(services):
    """moto standing in for minio + createbucket: the same bucket, the same credentials."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = services["api"]["environment"]
        bucket = services["createbucket"]["command"][-1].split("/", 1)[1]  # "local/spacetime"
        client = boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name=env["AWS_DEFAULT_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        client.create_bucket(Bucket=bucket)
        yield port, client, bucket
    finally:
        server.stop()


@pytest.fixture
def stack(services, s3, tmp_path):
    """Start the compose services locally; yield the API's base URL."""
    ports = {port: free_port() for port in CONTAINER_PORTS} | {9000: s3[0]}
    net = LocalNetwork(ports, tmp_path / "root")
    procs = Processes(tmp_path)

    def start(name: str, *, extra: tuple[str, ...] = (), replicas: int = 1) -> None:
        service = services[name]
        for i in range(replicas):
            procs.start(f"{name}-{i + 1}", net.argv(service) + list(extra), net.env(service))

    def healthy(name: str) -> None:
        service = services[name]
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", f"{name}: healthcheck should be exec form"
        procs.wait_healthy(f"{name}-1", [net.rewrite(arg) for arg in test[1:]], net.env(service), START_TIMEOUT_S)

    try:
        # What the container gave each one: its own port, address and volume.
        start("redis", extra=("--port", str(ports[6379]), "--bind", "127.0.0.1", "--dir", str(tmp_path)))
        start("scheduler")
        healthy("redis")
        healthy("scheduler")
        # One worker a pool: replicas only repeat the same command, and this machine is small.
        start("worker", extra=("--host", "127.0.0.1"))
        start("worker-interactive", extra=("--host", "127.0.0.1"))
        start("api")
        start("dispatcher", replicas=services["dispatcher"]["deploy"]["replicas"])
        healthy("worker")
        healthy("worker-interactive")
        healthy("api")
        # keys mode: the key a user makes with `docker compose exec api spacetime clients add`.
        add = subprocess.run(
            ["spacetime", "clients", "add", "smoke"], env=net.env(services["api"]), capture_output=True, text=True
        )
        assert add.returncode == 0, add.stderr
        yield f"http://127.0.0.1:{ports[5000]}", procs, {"Authorization": f"Bearer {add.stdout.strip()}"}
    except BaseException:
        print(procs.all_logs())  # a service that did not start says why
        raise
    finally:
        procs.stop_all()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_seed_curl_flow_and_even_sum_through_compose_services(stack, s3, services):
    api, procs, key = stack
    _, client, bucket = s3
    try:
        assert httpx.post(f"{api}/randomize", content=CAT_PNG.read_bytes()).status_code == 401  # no key
        check_randomize(api, key)
        check_even_sum(api, key)
        # The S3 settings were read: the upload and the reports went to the bucket, not to
        # a local folder.
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert any(k.startswith("uploads/") for k in keys), keys
        assert any(k.startswith("reports/") for k in keys), keys
        check_dispatchers_stop_before_docker_kills_them(procs, services["dispatcher"])
    except BaseException:
        print(procs.all_logs())  # pytest shows it with the failure
        raise


def check_randomize(api: str, key: dict) -> None:
    # curl -H "Authorization: Bearer $KEY" -H 'Content-Type: image/png' --data-binary @cat.png http://localhost:5000/randomize
    cat = CAT_PNG.read_bytes()
    created = httpx.post(f"{api}/randomize", content=cat, headers={"Content-Type": "image/png", **key})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    statuses = wait_status(api, "randomize", token, timeout_s=40, headers=key)
    assert statuses[-1] == {"status": "finished"}, statuses
    result = httpx.get(f"{api}/randomize/{token}/result", headers=key)
    assert result.status_code == 200
    original, shuffled = Image.open(io.BytesIO(cat)), Image.open(io.BytesIO(result.content))
    assert shuffled.format == "PNG"
    assert (shuffled.size, shuffled.mode) == (original.size, original.mode)
    # A permutation of blocks: the same pixels, somewhere else.
    assert sorted(shuffled.getdata()) == sorted(original.getdata())
    assert shuffled.tobytes() != original.tobytes()


def check_even_sum(api: str, key: dict) -> None:
    rng = random.Random(7)
    numbers = [rng.randrange(0, 10**12) for _ in range(20_000)]
    text = "\n".join(" ".join(map(str, numbers[i : i + 10])) for i in range(0, len(numbers), 10)) + "\n"
    body = text.encode()
    # curl -H 'Content-Type: text/plain' --data-binary @numbers.txt http://localhost:5000/even-sum
    # keep_input: the upload stays in the bucket once the job ends, where the test looks for it.
    created = httpx.post(f"{api}/even-sum?keep_input=true", content=body, headers={"Content-Type": "text/plain", **key})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    statuses = wait_status(api, "even-sum", token, timeout_s=40, headers=key)
    assert statuses[-1] == {"status": "finished"}, statuses
    result = httpx.get(f"{api}/even-sum/{token}/result", headers=key)
    assert result.status_code == 200
    evens = [n for n in numbers if n % 2 == 0]
    assert result.json() == {"sum": sum(evens), "even_count": len(evens), "count": len(numbers), "bytes": len(body)}


def check_dispatchers_stop_before_docker_kills_them(procs: Processes, dispatcher: dict) -> None:
    """SIGTERM, as `docker compose stop` sends it: each exits cleanly before stop_grace_period."""
    running = [process for name, process in procs.started if name.startswith("dispatcher-")]
    assert running
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        assert process.wait(duration_s(dispatcher["stop_grace_period"])) == 0


def test_local_network_translation():
    """The rewrite rules the smoke test depends on, on the shapes the compose file uses."""
    net = LocalNetwork({6379: 1001, 8786: 1002, 8787: 1003, 5000: 1005}, REPO / "x")
    assert net.rewrite("redis://redis:6379/0") == "redis://127.0.0.1:1001/0"
    assert net.rewrite("tcp://scheduler:8786") == "tcp://127.0.0.1:1002"
    assert net.rewrite(":8787") == "127.0.0.1:1003"
    assert net.rewrite("http://localhost:8787/status") == "http://127.0.0.1:1003/status"
    assert net.rewrite("0.0.0.0") == "127.0.0.1"
    assert net.rewrite("5000") == "1005"
    assert net.rewrite("2GiB") == "2GiB"
    assert net.rewrite('["s3://spacetime/"]') == '["s3://spacetime/"]'
    assert net.rewrite("/tmp/numba-cache") == str(REPO / "x" / "tmp" / "numba-cache")
