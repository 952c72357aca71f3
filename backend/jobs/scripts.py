"""The Lua scripts behind every state change of a job, loaded with their shared prelude.

Each script is one atomic Redis step (docs/architecture.md lists them). The sources are
the ``.lua`` files beside this module; key prefixes reach them as constants generated
from ``backend.jobs.keys``, so key names are written down once.
"""

from pathlib import Path

from redis import Redis
from redis.commands.core import Script

from backend.core import kinds
from backend.jobs import keys
from compute import redis_values

LUA_DIR = Path(__file__).parent / "lua"


def _prefix(template: str) -> str:
    """'queue:{lane}:{client}' -> 'queue:': scripts append the variable parts themselves."""
    return template.split("{", 1)[0]


CONSTANTS: dict[str, str | int] = {
    "TASKS": keys.TASKS,
    "RESULT": _prefix(keys.RESULT),
    "INPUT": _prefix(keys.INPUT),
    "QUEUE": _prefix(keys.QUEUE),
    "RING": _prefix(keys.RING),
    "DEFICIT": _prefix(keys.DEFICIT),
    "RUNNING": _prefix(keys.RUNNING),
    "BACKLOG_BLOCKS": _prefix(keys.BACKLOG_BLOCKS),
    "BACKLOG_BYTES": keys.BACKLOG_BYTES,
    "HELD_BYTES": keys.HELD_BYTES,
    "HELD_OUTPUTS": keys.HELD_OUTPUTS,
    "HELD_OUTPUT_BYTES": keys.HELD_OUTPUT_BYTES,
    "HELD_ENTRY_BYTES": keys.HELD_ENTRY_BYTES,
    "DOCTOR_OUTPUTS_MAX": keys.DOCTOR_OUTPUTS_MAX,
    "PIECE_BYTES": redis_values.PIECE_BYTES,
    "INPUT_HEAD_BYTES": keys.INPUT_HEAD_BYTES,
    "INPUTS_TO_DROP": keys.INPUTS_TO_DROP,
    "IMAGE_FILES": keys.IMAGE_FILES,
    "RELEASE_BATCH": keys.RELEASE_BATCH,
    "WAKE": _prefix(keys.WAKE),
    "WAKE_MAX": keys.WAKE_MAX,
    "PROCESSING": _prefix(keys.PROCESSING),
    "LEASE": _prefix(keys.LEASE),
    "DISPATCHERS": keys.DISPATCHERS,
    "IN_FLIGHT": _prefix(keys.IN_FLIGHT),
    "VTIME": _prefix(keys.VTIME),
    "VFINISH": _prefix(keys.VFINISH),
    "CLIENT": _prefix(keys.CLIENT),
    "ROUTE_BATCH": keys.ROUTE_BATCH,
    "UPLOADS": _prefix(keys.UPLOADS),
    "IMAGES_IN_FLIGHT": keys.IMAGES_IN_FLIGHT,
    "ENDINGS": keys.ENDINGS,
    "CANCELS": keys.CANCELS,
    "JOBS": _prefix(keys.JOBS),
    "SUMMARY": _prefix(keys.SUMMARY),
    "HISTORY_TTL_S": keys.HISTORY_TTL_S,
    "HISTORY_MAX": keys.HISTORY_MAX,
    "IDEMPOTENCY_TTL_S": keys.IDEMPOTENCY_TTL_S,
    "FAILURES": keys.FAILURES,
    "FAILURES_MAX": keys.FAILURES_MAX,
    "FAILURES_TTL_S": keys.FAILURES_TTL_S,
    "LEAD_TIMES": _prefix(keys.LEAD_TIMES),
    "LEAD_TIME_CLIENTS": keys.LEAD_TIME_CLIENTS,
    "LEAD_TIMES_MAX": keys.LEAD_TIMES_MAX,
    "LEAD_TIMES_WINDOW_S": keys.LEAD_TIMES_WINDOW_S,
}


def lua_value(value: str | int | dict[str, str]) -> str:
    """A Python constant as a Lua literal: a string, a number, or a table of strings."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{k!r}] = {v!r}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, str) else str(value)


def source(name: str) -> str:
    """The full source of script ``name``: constants, prelude, then the script."""
    return prelude() + (LUA_DIR / f"{name}.lua").read_text()


def prelude() -> str:
    """The constants and the prelude every script starts with.

    Built each time a script is registered (a few per store or queue object), so that the
    kind -> lane table holds the kinds declared when it is."""
    constants: dict[str, str | int | dict[str, str]] = {**CONSTANTS, "KIND_LANES": kinds.lanes()}
    header = "".join(f"local {name} = {lua_value(value)}\n" for name, value in constants.items())
    return header + (LUA_DIR / "prelude.lua").read_text()


def register(redis: Redis, name: str) -> Script:
    """Script ``name`` bound to ``redis`` (EVALSHA, loaded on first use)."""
    return redis.register_script(source(name))
