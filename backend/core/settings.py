"""One typed settings object, read from the environment once and passed down.

Every variable takes the ``SPACETIME_`` prefix; the few that other tools already
name (``REDIS_URL``, ``DASK_SCHEDULER_ADDRESS``) are read under that name too.
A bad value stops start-up with pydantic's message instead of failing later.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from compute.defaults import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_BLOCK_PX,
    DEFAULT_MAX_PIXELS,
    PILLOW_MAX_PIXELS,
    PROFILE_MIN_COMPUTE_S,
    S3_CONCURRENCY,
    S3_PART_BYTES,
    MiB,
)


def _env(name: str) -> AliasChoices:
    """Accept ``SPACETIME_<NAME>`` and the bare conventional ``<NAME>``."""
    return AliasChoices(f"SPACETIME_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPACETIME_", populate_by_name=True, extra="ignore")

    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL"))
    # A submission is acknowledged (201) only once this many replicas have it (Redis `WAIT`),
    # so a failover cannot lose it: 1 where Redis has a replica (ElastiCache), 0 locally.
    # With 1, submissions answer 503 while no replica is attached (docs/deployment-aws.md).
    redis_min_replicas: int = Field(0, ge=0)
    dask_scheduler_address: str = Field("tcp://127.0.0.1:8786", validation_alias=_env("DASK_SCHEDULER_ADDRESS"))
    # Shown to users (healthz, `spacetime up`); the scheduler serves it, we only link it.
    dashboard_url: str = "http://127.0.0.1:8787/status"

    api_host: str = "127.0.0.1"
    api_port: int = Field(5000, ge=1, le=65535)

    data_dir: Path = Path("data")
    # fsspec URLs: a local folder when embedded, s3://bucket/prefix/ in production.
    uploads_url: str = ""
    reports_url: str = ""
    # A job's report has its workers' profile when its tasks computed at least this long:
    # shorter, the samples (every 10 ms) are mostly other jobs', and asking costs each
    # image job ~4 ms of CPU across the workers, the scheduler and its dispatcher. 0: always.
    report_profile_min_s: float = Field(PROFILE_MIN_COMPUTE_S, ge=0)
    # JSON list of URL prefixes that POST /even-sum {"url"} may name; empty means the uploads store.
    allowed_url_prefixes: list[str] = []
    s3_endpoint_url: str | None = Field(None, validation_alias=_env("S3_ENDPOINT_URL"))

    result_ttl_s: int = Field(24 * 3600, gt=0)
    max_image_bytes: int = Field(20 * MiB, gt=0)
    max_image_pixels: int = Field(DEFAULT_MAX_PIXELS, gt=0, le=PILLOW_MAX_PIXELS)
    image_block_px: int = Field(DEFAULT_BLOCK_PX, gt=0)
    # An image of more pixels runs in the bulk pool, at its lower CPU priority
    # (compute.preload): one client's large images then yield the cores to other clients'
    # small ones, as blocks do (bench/hostile.py, scenario 1). 0: every image interactive.
    large_image_pixels: int = Field(4_000_000, ge=0)
    # An image whose output may take more than this (its kind's output bound) keeps its
    # input and output as files in the uploads store, not in Redis: Redis's one thread
    # writes every byte it takes to its append-only file, and a client's stream of large
    # images, at its held-bytes bound, slowed every other client's jobs by a third
    # (bench/hostile.py, scenario 1). They still count in the client's held bytes. The
    # default keeps cat.png-sized images (1.6 MB of room) in Redis. 0: always in Redis.
    image_file_bytes: int = Field(4 * MiB, ge=0)
    max_upload_bytes: int = Field(64 * 1024 * MiB, gt=0)
    # At start, the API removes uploads that a crash cut off and that have not moved for this long.
    upload_stale_s: float = Field(600.0, gt=0)
    even_sum_block_bytes: int = Field(DEFAULT_BLOCK_BYTES, gt=0)
    # An S3 block is read as GETs of this many bytes, this many at once (compute/ranged.py,
    # docs/benchmarks.md: 8 x 8 MiB read a 64 MiB block ~7x faster than one GET).
    s3_part_bytes: int = Field(S3_PART_BYTES, ge=5 * MiB)
    s3_concurrency: int = Field(S3_CONCURRENCY, gt=0)
    # Connections of a process's S3 client: worker threads x s3_concurrency must fit
    # (aiobotocore's default of 10 would queue the GETs of a second thread).
    s3_max_connections: int = Field(64, gt=0)
    # Direct uploads (POST /even-sum/uploads): the client PUTs parts straight to S3 on presigned
    # URLs, so a big file never passes through the API. Offered only when the uploads store is
    # S3; turn it off where clients cannot reach the S3 endpoint the API signs for (the MinIO
    # of docker-compose lives on the compose network only).
    direct_uploads: bool = True
    # Parts are this big unless the client asks otherwise (S3 allows 5 MiB to 5 GiB, at most
    # 10,000 parts): 64 MiB is one block of the even-sum job, ~80 parts for 5 GB.
    direct_upload_part_bytes: int = Field(64 * MiB, ge=5 * MiB, le=5 * 1024 * MiB)
    # A direct upload must be completed within this long; its presigned URLs expire then too
    # (SigV4 allows at most 7 days). An hour is a 5 GB file at ~1.5 MB/s.
    direct_upload_expiry_s: int = Field(3600, gt=0, le=7 * 24 * 3600)
    # How often the API aborts direct uploads abandoned past their expiry.
    direct_upload_sweep_s: float = Field(60.0, gt=0)
    # A request body that pauses longer than body_grace_s, or averages under body_min_bytes_per_s
    # once that head start is spent, is cut with 408: slow-drip clients cannot hold connections.
    # 16 KiB/s is a 128 kbit/s uplink; a 5 GB upload is legitimate at any speed above it.
    body_grace_s: float = Field(30.0, gt=0)
    body_min_bytes_per_s: int = Field(16 * 1024, gt=0)

    # GET .../status?wait=S answers when the job ends, or after S seconds; S may be at most
    # this. 30 s stays well under the idle timeouts of proxies and load balancers (an ALB's: 60 s).
    max_status_wait_s: float = Field(30.0, ge=0)
    # Status requests one API process keeps waiting at once; past this a wait is answered at
    # once, as without ?wait= (each waiter holds a connection, and the clients poll instead).
    max_status_waiters: int = Field(1000, ge=0)
    # ... and of one client, so that one client cannot take them all from the others.
    max_status_waiters_per_client: int = Field(100, ge=0)
    # Event streams (GET /tasks/{token}/events) one API process serves at once; past this a
    # new one is a 429 with Retry-After (each holds a connection, as a waiter does).
    max_event_streams: int = Field(1000, ge=0)
    # ... and of one client (a browser console opens at most 3 at once).
    max_event_streams_per_client: int = Field(20, ge=0)
    # After a 429 on a submission route, the same caller's next requests there are held
    # this long (or the 429's Retry-After, if shorter), then checked: a client flooding at
    # its bound gets one answer a moment per connection (backend/api/cooldowns.py). 0: off.
    refusal_cooldown_s: float = Field(1.0, ge=0, le=60)

    # Who a request comes from: `open` trusts X-Client-Id (local use; the default of
    # `spacetime up`), `keys` requires `Authorization: Bearer <key>` (see `spacetime clients`).
    auth: Literal["open", "keys"] = "open"

    # Job loops per dispatcher in each lane: bulk jobs can never hold the interactive ones.
    # A dispatcher may serve one lane only (0 loops in the other; `spacetime up` runs so).
    interactive_concurrency: int = Field(4, ge=0)
    bulk_concurrency: int = Field(3, ge=0)
    # A job whose attempts were lost this many times (its dispatcher died, the scheduler
    # went away...) ends `errored`: a job that kills what runs it never loops.
    max_attempts: int = Field(3, gt=0)
    lease_s: float = Field(10.0, gt=0)
    # On SIGTERM, how long running jobs may take before they are handed back to the queue.
    shutdown_grace_s: float = Field(30.0, ge=0)
    # How long the Dask client waits for the scheduler, at start and after losing it.
    dask_timeout_s: float = Field(60.0, gt=0)
    # A running job with no Dask worker left for this long goes back to its queue.
    no_workers_grace_s: float = Field(60.0, gt=0)

    # How often one dispatcher (whichever takes the lock) recomputes every counter of the
    # queues and logs any drift (backend/jobs/doctor.py; 0: never). The check reads every
    # live job's record in one Redis step, ~1 ms per thousand jobs: every 5 minutes is noise.
    doctor_interval_s: float = Field(300.0, ge=0)

    # What a client gets unless `spacetime clients add` set its own (docs/clients.md).
    default_weight: int = Field(1, gt=0)
    default_max_running_bulk: int = Field(2, gt=0)
    # Image jobs a client may have running at once (0: no limit; a registered client's
    # `max_running_interactive` field in `client:<name>` overrides it). Without it one client
    # with large images holds every interactive worker, and another's 30 ms image waits
    # seconds behind them (bench/hostile.py, scenario 1). 1 leaves the other interactive
    # workers to other clients; a lone client's images then run one at a time.
    default_max_running_interactive: int = Field(1, ge=0)
    # Job submissions per second per client (0: no limit).
    default_rate: float = Field(50.0, ge=0)
    # Input bytes of a client's jobs queued or running (0: no limit).
    default_max_backlog_bytes: int = Field(256 * 1024 * MiB, ge=0)
    # Bytes a client may hold in Redis and the uploads store (image_file_bytes): inputs of
    # its live jobs (images) and outputs kept for result_ttl_s (0: no limit; a registered
    # client's `max_held_bytes` field overrides it). 1 GiB is ~25 jobs of 20 MiB images in
    # and out: with the few clients a node of a few GiB serves, one client can never fill
    # it (docs/security.md).
    default_max_held_bytes: int = Field(1024 * MiB, ge=0)
    # Uploads a client may stream to the uploads store at once, and direct uploads it may
    # have pending (0: no limit). Their bytes are reserved against its backlog quota as they
    # start (backend/jobs/reservations.py); these bound the connections and S3 multipart
    # uploads one client holds. 4 streams fill a client's uplink; 8 direct uploads are 8
    # large files being sent from anywhere at once.
    default_max_uploads: int = Field(4, ge=0)
    default_max_direct_uploads: int = Field(8, ge=0)

    # Print CloudWatch embedded-metric-format lines (backlog, in flight, job times) on
    # stdout, for scaling on AWS (infra/).
    cloudwatch_metrics: bool = False

    # `spacetime up` restarts a crashed child (backoff from 0.5 s, doubling) until that child
    # crashes this many times within the window; then it stops everything. 5 in 60 s lets a
    # child ride out a Redis restart or a bad minute, and gives up on a crash loop in ~8 s.
    restart_max_crashes: int = Field(5, ge=1)
    restart_window_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _some_job_loops(self) -> "Settings":
        if self.interactive_concurrency + self.bulk_concurrency == 0:
            raise ValueError("interactive_concurrency and bulk_concurrency are both 0: a dispatcher with no job loop")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("dask_scheduler_address")
    @classmethod
    def _dask_scheme(cls, value: str) -> str:
        if "://" not in value:
            value = f"tcp://{value}"
        return value

    def model_post_init(self, __context) -> None:
        data = self.data_dir.resolve()
        if not self.uploads_url:
            self.uploads_url = (data / "uploads").as_uri()
        if not self.reports_url:
            self.reports_url = (data / "reports").as_uri()
        if not self.allowed_url_prefixes:
            self.allowed_url_prefixes = [self.uploads_url]
        self.uploads_url = self.uploads_url.rstrip("/")
        self.reports_url = self.reports_url.rstrip("/")

    @property
    def direct_uploads_offered(self) -> bool:
        """Whether POST /even-sum/uploads is served: S3 only (a local folder has no presigned URLs)."""
        return self.direct_uploads and self.uploads_url.startswith("s3://")

    @property
    def worker_redis_url(self) -> str:
        """``redis_url`` without its password, for tasks that reach Redis from the workers
        (compute/stored.py): a task's arguments pass through the Dask scheduler, so no
        secret rides in them; workers take the password from their own environment."""
        parts = urlsplit(self.redis_url)
        netloc = parts.netloc.rpartition("@")[2]
        if parts.username:
            netloc = f"{parts.username}@{netloc}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
        # Built by hand: urlunsplit drops the "//" of unix:///path, which redis-py requires.
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")

    def storage_options(self, url: str) -> dict:
        """fsspec options for ``url``; credentials stay with the standard AWS chain."""
        if not url.startswith("s3://"):
            return {}
        options: dict = {"config_kwargs": {"max_pool_connections": self.s3_max_connections}}
        if self.s3_endpoint_url:
            options["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        return options


@lru_cache
def get_settings() -> Settings:
    return Settings()
