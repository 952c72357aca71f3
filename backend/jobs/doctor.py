"""The doctor: every counter and ring of the queues, recomputed from what they count.

The counters (``running:<lane>``, ``backlog-blocks:<lane>``, ``backlog-bytes``,
``held-bytes``) and the rings are kept by the scripts that move tokens, each change in
the same atomic step as the move, so they should never drift. The doctor checks that
they do not: doctor.lua recomputes them all in one step from the lists (``tasks``, the
queues, the processing lists), the job records and the kept outputs, reports each
difference, and with ``repair`` writes the recomputed values. Being one step, it cannot
race a dispatcher or the API: what it writes is exact at the moment it runs. Reservations
(``uploads:<kind>:<client>``: uploads, and images on their way into Redis) are leases kept
apart from the counters, so a request in flight is no drift; the doctor drops the lapsed
ones (a dead API's), as the next reservation of their client would.

``spacetime doctor`` runs it by hand; each dispatcher's heartbeat tries every
``doctor_interval_s``, and the one that takes the lock key runs it and logs any drift.
That periodic check reads the kept outputs' entries only while they are few (see
``check``): the step must not stop Redis for seconds in service.
"""

import json
from dataclasses import dataclass
from typing import Any

from redis import Redis

from backend.jobs import keys, scripts


@dataclass(frozen=True)
class Drift:
    """A stored counter (or ring) that differs from its recomputed value."""

    key: str
    stored: Any
    recomputed: Any
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.key} {self.field}" if self.field is not None else self.key
        return f"{where}: stored {self.stored}, recomputed {self.recomputed}"


class Doctor:
    """Checks (and repairs) the queues' counters and rings."""

    def __init__(self, redis: Redis):
        self.redis = redis
        self._doctor = scripts.register(redis, "doctor")

    def check(self, repair: bool = False, every_output: bool = True) -> list[Drift]:
        """Every drift found; with ``repair``, each one is fixed in the same step. Without
        ``every_output``, the kept outputs' sums (keys.HELD_OUTPUT_BYTES) are recomputed
        only while there are at most keys.DOCTOR_OUTPUTS_MAX outputs: a check that may not
        stop Redis for long."""
        found = {
            "queues": self._scan(keys.QUEUE),
            "processing": [name[len(keys.processing("")) :] for name in self._scan(keys.PROCESSING)],
            "reservations": self._scan(keys.UPLOADS),
        }
        answer = json.loads(self._doctor(args=[int(repair), json.dumps(found), int(every_output)]))
        return [Drift(**{k: _listed(v) for k, v in drift.items()}) for drift in _listed(answer)]

    def _scan(self, template: str) -> list[str]:
        prefix = template.split("{", 1)[0]
        return [name.decode() for name in self.redis.scan_iter(match=f"{prefix}*", count=1000)]

    def try_periodic(self, holder: str, interval_s: float) -> list[Drift] | None:
        """Check (never repair) if no other dispatcher did in the last ``interval_s``:
        the lock key, set with that TTL, lets one of them through per interval."""
        if not self.redis.set(keys.DOCTOR_LOCK, holder, nx=True, px=int(interval_s * 1000)):
            return None
        return self.check(every_output=False)


def _listed(value: Any) -> Any:
    """cjson writes an empty Lua table as {}: an empty list here."""
    return [] if value == {} else value
