"""Clients: who sends jobs, with their API keys, weights and quotas, kept in Redis.

``spacetime clients add NAME`` registers a client and prints a new random API key once;
only its SHA-256 is stored (``api-key:<sha256>`` -> "<name> <registration id>"), so a copy
of Redis reveals no key. ``--key-sha256`` registers the hash of a key made elsewhere and
prints nothing secret: on AWS the command's output goes to CloudWatch Logs
(docs/deployment-aws.md). A plain hash is enough: the keys are 256 random bits, not
passwords a person chose, so there is nothing to guess and no need for a slow hash.

A registration is an identity, not a name: each ``add`` makes a new random id, and jobs
and direct uploads belong to the id of the key that made them (``client_id``). Removing
a name and adding it again makes a new identity with no access to the old one's jobs
(it shares only the name's per-client queues and counters, keyed by name).

A registered client's settings override the defaults of backend/core/settings.py for it: its
weight in the fair queue, its cap of running bulk jobs, its submission rate and its
backlog quota. Unregistered clients (open mode's X-Client-Id names) get the defaults.
``--admin`` registers an operator: in keys mode only operators read the whole service's
state (``GET /overview``); in open mode, where names are not proven, every caller is one.
"""

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any, cast

from redis import Redis

from backend.core.settings import Settings
from backend.jobs import keys
from compute.errors import InvalidInput

# Names go into Redis keys, metric labels and log lines: plain characters only, so none
# of them can be broken by what a client sends.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
KEY_PREFIX = "st_"
# A request with no X-Client-Id (open mode) is this client.
ANONYMOUS = "anonymous"
# Names a registration must not take: records without a client read as `anonymous`, and
# /metrics labels unregistered clients `unregistered` (backend/telemetry/metrics.py).
RESERVED_NAMES = (ANONYMOUS, "unregistered")
# A key's hash as stored, and as `clients add --key-sha256` takes it: hashlib's hexdigest.
KEY_SHA256 = re.compile(r"[0-9a-f]{64}")
# Characters of a key's hash shown by `clients list`: enough to tell keys apart.
FINGERPRINT_CHARS = 12


@dataclass(frozen=True)
class ClientSettings:
    """What the queue and the API apply to one client."""

    name: str
    weight: int
    max_running_bulk: int
    rate: float  # job submissions per second; 0: no limit
    max_backlog_bytes: int  # input bytes of jobs queued or running; 0: no limit
    registered: bool = False
    # Proven by an API key (keys mode), not just named by a header (open mode).
    authenticated: bool = False
    # The registration's random id (None: unregistered, or a key made before ids were).
    client_id: str | None = None
    # An operator (`clients add --admin`): may read every client's state (GET /overview).
    admin: bool = False

    @property
    def owner(self) -> str:
        """Whom a direct upload belongs to: the registration, else the name (open mode)."""
        return self.client_id or self.name


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InvalidInput("a client name is 1 to 64 letters, digits or . _ @ -, starting with a letter or digit")
    return name


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_key_sha256(digest: str) -> str:
    if not KEY_SHA256.fullmatch(digest):
        raise InvalidInput(
            "--key-sha256 takes the SHA-256 of the key as 64 lowercase hex digits, "
            'as `printf %s "$KEY" | sha256sum` prints it'
        )
    return digest


class ClientRegistry:
    """Registered clients and their keys."""

    def __init__(self, redis: Redis, settings: Settings):
        self.redis = redis
        self.settings = settings

    def add(
        self,
        name: str,
        weight: int | None = None,
        max_running_bulk: int | None = None,
        rate: float | None = None,
        max_backlog_bytes: int | None = None,
        admin: bool = False,
    ) -> str:
        """Register ``name`` with a new API key and return it (shown once, never stored)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self.add_hashed(name, key_hash(key), weight, max_running_bulk, rate, max_backlog_bytes, admin)
        return key

    def add_hashed(
        self,
        name: str,
        digest: str,
        weight: int | None = None,
        max_running_bulk: int | None = None,
        rate: float | None = None,
        max_backlog_bytes: int | None = None,
        admin: bool = False,
    ) -> None:
        """Register ``name`` as the holder of the key whose SHA-256 is ``digest``: the key
        itself never reaches this process. A quota left None takes the default."""
        defaults = self.settings
        if name in RESERVED_NAMES:
            raise InvalidInput(f"the name {name!r} is reserved (records without a client read as it); choose another")
        client = ClientSettings(
            name=check_name(name),
            weight=defaults.default_weight if weight is None else weight,
            max_running_bulk=defaults.default_max_running_bulk if max_running_bulk is None else max_running_bulk,
            rate=defaults.default_rate if rate is None else rate,
            max_backlog_bytes=defaults.default_max_backlog_bytes if max_backlog_bytes is None else max_backlog_bytes,
            client_id=secrets.token_hex(16),
            admin=admin,
        )
        if client.weight < 1 or client.max_running_bulk < 1 or client.rate < 0 or client.max_backlog_bytes < 0:
            raise InvalidInput("weight and max-running-bulk must be at least 1; rate and max-backlog-bytes at least 0")
        # Redis stores no booleans: the flag is 1 or 0.
        fields = {**describe(client), "admin": int(admin), "key_sha256": check_key_sha256(digest)}
        del fields["name"]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.watch(keys.client(name))
            if pipe.exists(keys.client(name)):
                raise InvalidInput(f"client {name!r} exists; remove it first to give it a new key")
            pipe.multi()
            pipe.sadd(keys.CLIENTS, name)
            pipe.hset(keys.client(name), mapping=cast(Any, fields))
            pipe.set(keys.api_key(digest), f"{name} {client.client_id}")
            pipe.execute()

    def remove(self, name: str) -> bool:
        """Unregister ``name``; its key stops working at once. False if it was not registered."""
        digest = cast(bytes | None, self.redis.hget(keys.client(name), "key_sha256"))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.srem(keys.CLIENTS, name)
            pipe.delete(keys.client(name))
            if digest:
                pipe.delete(keys.api_key(digest.decode()))
            removed = pipe.execute()[0]
        return bool(removed)

    def names(self) -> list[str]:
        return sorted(name.decode() for name in cast(set[bytes], self.redis.smembers(keys.CLIENTS)))

    def get(self, name: str) -> ClientSettings:
        """The settings that apply to ``name``: its own if registered, else the defaults."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.client(name)))
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        defaults = self.settings
        return ClientSettings(
            name=name,
            weight=int(fields.get("weight", defaults.default_weight)),
            max_running_bulk=int(fields.get("max_running_bulk", defaults.default_max_running_bulk)),
            rate=float(fields.get("rate", defaults.default_rate)),
            max_backlog_bytes=int(fields.get("max_backlog_bytes", defaults.default_max_backlog_bytes)),
            registered=bool(fields),
            client_id=fields.get("client_id"),
            admin=fields.get("admin") == "1",
        )

    def fingerprint(self, name: str) -> str:
        digest = cast(bytes | None, self.redis.hget(keys.client(name), "key_sha256")) or b""
        return digest.decode()[:FINGERPRINT_CHARS]

    def authenticate(self, key: str) -> tuple[str, str | None] | None:
        """(name, registration id) of the client holding ``key``, or None. A key made
        before registrations had ids holds the name alone (id None); one made for a name
        now reserved is refused, since it would match every record without a client."""
        holder = cast(bytes | None, self.redis.get(keys.api_key(key_hash(key))))
        if holder is None:
            return None
        name, _, client_id = holder.decode().partition(" ")
        return None if name in RESERVED_NAMES else (name, client_id or None)


def describe(client: ClientSettings) -> dict[str, str | int | float]:
    """A client's settings as shown by `spacetime clients list` (and stored by ``add``)."""
    hidden = ("registered", "authenticated")
    return {k: v for k, v in asdict(client).items() if k not in hidden and v is not None}
