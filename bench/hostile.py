"""Hostile clients: one client (A) misbehaves, by mistake or on purpose; does another (B)
notice? Deliverable 7 of issue 17, against a `spacetime up` in keys mode this script
starts (free loopback ports), with bounds small enough for A to reach them.

    .venv/bin/python -m bench.hostile [--scenario N] [--quick] [--big 2GB --medium 300MB --b-size 100MB]
    .venv/bin/python -m bench.hostile --scenario 1 --rounds 6 --aof-turns  # what of B's wait is the AOF

1. A floods 20 MiB noise PNGs from several threads; B sends cat.png jobs one after another.
2. A uploads two files of one digit run each (2 GB and 300 MB); B runs 100 MB even-sums.
3. A starts 50 chunked uploads at once (no length, slow bodies); B uploads small files.
4. A dispatcher and a worker are SIGKILLed while A's and B's jobs run.
5. A floods small PNGs whose shuffle is hundreds of times their size; B sends cat.png jobs.

B's figures with A are printed against B alone, measured first in the same run; scenario
1 measures the two in turns, round after round, and also B with one core taken by plain
loops, one steady or 4 pulsing, and by A's images shuffled bare in a process of their
own: the machine's ceiling, for three shapes of one core's load. Every
scenario ends with a dispatcher and a worker SIGKILLed under a last batch of jobs (`up`
restarts them), then `spacetime doctor`, whose output and exit code are printed with the
counters it checked. Every scenario is bounded in jobs and seconds and stops by itself.
"""

import argparse
import contextlib
import json
import multiprocessing
import os
import select
import signal
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
from PIL import Image
from redis import Redis

from bench.datagen import DATA_DIR, ensure_file, parse_size
from bench.fairness import T1_TARGET, Tenant, image_records, p, t1_met, where_p95
from bench.system import System, core_check, one_core_taken, running_system
from compute.defaults import MAX_TOKEN_BYTES, MiB
from compute.image import randomize_image
from compute.png import output_bound
from compute.preload import BULK_NICE
from tests.images import ramps_png

MB = 10**6
# Bounds set small for the run, so that A reaches them within seconds.
MAX_HELD_BYTES = 256 * MiB
MAX_IMAGE_BYTES = 24 * MiB  # room for a 20 MiB noise PNG and its headers
MAX_UPLOADS = 4
# Results and records kept this long, not a day: scenario 1's A fills its bound with kept
# outputs each round, and a round starts once they are gone, so every round is the same
# load on the same Redis (kept a day, each round's A would add 240 MiB the next rounds'
# AOF rewrites copy).
RESULT_TTL_S = 15
NOISE_BYTES = 20 * MiB
# Scenario 5's PNG: rows of ramps (tests.images.ramps_png), 83 KB that shuffle to 56 MiB.
RAMPS_SIDE = 4000
# The second ceiling: one core's worth of CPU taken by this many loops, each spinning a
# quarter of the time in short pulses (bench/system.py: one_core_taken).
PULSING_LOOPS = 4
# A's flood: threads and requests at most (each request carries 20 MiB).
FLOOD_THREADS = 4
FLOOD_MAX_REQUESTS = 3000
# A's slow uploads: how many at once, each a 16 KiB chunk every 0.25 s (64 KiB/s, above
# the API's floor of 16 KiB/s: slow, not cut for slowness).
SLOW_UPLOADS = 50
SLOW_CHUNK = b"2\n" * 8192
SLOW_INTERVAL_S = 0.25
# What a job may take at most here; far above any expected figure.
JOB_TIMEOUT_S = 600
WAIT_S = 30  # the long poll of GET /tasks/<token>?wait=


@dataclass
class Sizes:
    big: int  # A's first file of one digit run
    medium: int  # A's second
    b_file: int  # B's even-sum file
    images: int  # B's image jobs per measurement
    rounds: int  # scenario 1: B alone, then B with A, this many times in turns
    b_sums: int  # B's even-sum jobs per measurement
    b_uploads: int  # B's uploads per measurement
    slow_s: float  # how long each of A's slow uploads lasts
    # Scenario 1, for measurement only: Redis's AOF off in every other round (CONFIG SET
    # appendonly), to see what of B's wait with A is the AOF's.
    aof_turns: bool = False


FULL = Sizes(2 * 10**9, 300 * MB, 100 * MB, images=40, rounds=3, b_sums=5, b_uploads=10, slow_s=10)
QUICK = Sizes(64 * MB, 16 * MB, 20 * MB, images=20, rounds=2, b_sums=3, b_uploads=6, slow_s=5)


# -- jobs and answers ------------------------------------------------------------------------


def ended(tenant: Tenant, token: str) -> dict:
    """The job's record once it is final, finished or errored (long polls, bounded)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        record = tenant.http.get(f"/tasks/{token}", params={"wait": WAIT_S}, headers=tenant.headers).json()
        if record["status"] in ("finished", "errored"):
            return record
    raise TimeoutError(f"{token} did not end in {JOB_TIMEOUT_S} s")


def exact(tenant: Tenant, token: str, answer: dict) -> bool:
    """Whether an even-sum job's result is the file's exact answer."""
    result = tenant.http.get(f"/even-sum/{token}/result", headers=tenant.headers).json()
    return result["sum"] == answer["sum"] and result["count"] == answer["count"]


def ms(values: list[float], q: int) -> str:
    return f"{p(values, q) * 1e3:.0f}"


def t1_line(alone: list[dict], loaded: list[dict]) -> str:
    """B's image lead times alone and with A, held to T1's limit (bench/fairness.py)."""
    idle, busy = [r["lead_s"] for r in alone], [r["lead_s"] for r in loaded]
    idle95, busy95 = p(idle, 95) * 1e3, p(busy, 95) * 1e3
    verdict = "met" if t1_met(idle95, busy95) else "MISSED"
    return (
        f"  B p50/p95 lead alone {ms(idle, 50)}/{idle95:.0f} ms, with A {ms(busy, 50)}/{busy95:.0f} ms "
        f"({busy95 / idle95:.2f}x): T1 limit ({T1_TARGET}) {verdict}\n"
        f"  p95 parts (ms), alone: {where_p95(alone)}; with A: {where_p95(loaded)}"
    )


def ceiling_line(how: str, alone: list[dict], taken: list[dict], loaded: list[dict]) -> str:
    """B's image lead times with one core taken by plain loops (not our system), beside
    alone and with A: whether B with A is at what the machine gives with a core gone."""
    idle, core, busy = ([r["lead_s"] for r in records] for records in (alone, taken, loaded))
    core95, busy95 = p(core, 95) * 1e3, p(busy, 95) * 1e3
    return (
        f"  B p50/p95 lead with one core {how} {ms(core, 50)}/{core95:.0f} ms "
        f"({core95 / (p(idle, 95) * 1e3):.2f}x alone); with A {busy95 / core95:.2f}x that ceiling\n"
        f"  p95 parts (ms), one core {how}: {where_p95(taken)}"
    )


# -- what `up` runs, and killing some of it --------------------------------------------------


def children(system: System, kind: str) -> list[psutil.Process]:
    """`up`'s descendants of one kind: "worker" (a Dask worker process under its nanny) or
    "dispatcher"."""
    wanted = "spawn_main" if kind == "worker" else "dispatcher"
    found = []
    for child in psutil.Process(system.process.pid).children(recursive=True):
        try:
            if wanted in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def pids(system: System, kind: str) -> set[int]:
    return {child.pid for child in children(system, kind)}


def victims(system: System, lane: str) -> list[psutil.Process]:
    """The dispatcher of ``lane`` (`up` runs one per lane, the other lane's loops at 0) and
    the worker busiest right now: where the jobs in flight are."""
    other = "INTERACTIVE" if lane == "bulk" else "BULK"
    dispatcher = next(
        d for d in children(system, "dispatcher") if d.environ().get(f"SPACETIME_{other}_CONCURRENCY") == "0"
    )
    workers = children(system, "worker")
    for worker in workers:
        worker.cpu_percent()
    time.sleep(0.3)
    return [dispatcher, max(workers, key=lambda worker: worker.cpu_percent())]


def kill_one_each(system: System, lane: str) -> str:
    """SIGKILL ``lane``'s dispatcher and the busiest worker; wait (bounded) until `up` has
    as many again."""
    counts = {kind: len(children(system, kind)) for kind in ("dispatcher", "worker")}
    killed = []
    for kind, victim in zip(counts, victims(system, lane), strict=True):
        os.kill(victim.pid, signal.SIGKILL)
        killed.append(f"{kind} {victim.pid}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(len(children(system, k)) < n for k, n in counts.items()):
        time.sleep(0.5)
    back = all(len(children(system, k)) >= n for k, n in counts.items())
    return f"SIGKILLed {', '.join(killed)}; {'both replaced' if back else 'NOT replaced within 60 s'}"


def under_fire(system: System, work: Callable[[], str], lane: str = "bulk") -> str:
    """Run ``work`` (jobs of ``lane`` that it waits for) with the lane's dispatcher and the
    busiest worker killed 1 s in."""
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(work()), daemon=True)
    thread.start()
    time.sleep(1)
    kills = kill_one_each(system, lane)
    thread.join(JOB_TIMEOUT_S)
    return f"  {kills}; the jobs under it: {outcome[0] if outcome else 'NOT ended'}"


def sums_under_fire(tenant: Tenant, path: Path, answer: dict, n: int) -> Callable[[], str]:
    """``n`` even-sum jobs over ``path`` at once; the work reports how many ended exact."""

    def work() -> str:
        tokens = [tenant.sum_file(path) for _ in range(n)]
        records = [ended(tenant, token) for token in tokens]
        good = sum(r["status"] == "finished" and exact(tenant, r["token"], answer) for r in records)
        retried = sum(r["attempts"] > 1 for r in records)
        return f"{good}/{n} even-sums finished exact ({retried} retried)"

    return work


# -- where the CPU went ----------------------------------------------------------------------


def part_of(cmdline: list[str]) -> str:
    """Which part of `up` a process is, by its command line."""
    line = " ".join(cmdline)
    marks = (
        ("redis", "redis-server"),
        ("redis's AOF rewrite", "redis-aof-rewrite"),  # the child Redis forks to rewrite its AOF
        ("dispatchers", "dispatcher"),
        ("workers", "spawn_main"),
    )
    for part, mark in marks:
        if mark in line:
            return part
    return "API" if cmdline[-1:] == ["api"] else "other"


def cpu_seconds(system: System) -> Counter:
    """CPU seconds so far of this bench process (the clients), of its children (A's flood),
    of `up` itself (the Dask scheduler and nannies) and of each part it runs."""
    bench = psutil.Process()
    used: Counter = Counter({"bench (clients)": sum(bench.cpu_times()[:2])})
    for child in bench.children():
        if child.pid == system.process.pid:  # `up`, below
            continue
        with contextlib.suppress(psutil.NoSuchProcess):
            used["A's flood (nice 19)" if child.nice() == 19 else "core-taking loops"] += sum(child.cpu_times()[:2])
    up = psutil.Process(system.process.pid)
    used["up (scheduler)"] = sum(up.cpu_times()[:2])
    for child in up.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # ended meanwhile
            used[part_of(child.cmdline())] += sum(child.cpu_times()[:2])
    return used


def cpu_line(label: str, system: System, before: Counter, wall_s: float) -> str:
    """The cores each part used since ``before``, over ``wall_s`` seconds."""
    used = cpu_seconds(system)
    used.subtract(before)
    shares = ", ".join(f"{part} {seconds / wall_s:.2f}" for part, seconds in used.most_common() if seconds > 0)
    return f"  cores used {label} ({wall_s:.1f} s): {shares}"


def measured(system: System, label: str, measure: Callable[[], list[dict]]) -> tuple[list[dict], str]:
    """``measure``'s records, and the cores each part used while it ran."""
    before, start = cpu_seconds(system), time.monotonic()
    records = measure()
    return records, cpu_line(label, system, before, time.monotonic() - start)


# -- the doctor ------------------------------------------------------------------------------

COUNTERS = ("running:*", "backlog-blocks:*", "backlog-bytes", "held-bytes")


def counters(redis: Redis) -> str:
    """Every counter of the fair queue, as stored, non-zero fields only."""
    lines = []
    for pattern in COUNTERS:
        for name in sorted(redis.scan_iter(match=pattern)):
            fields = {k.decode(): int(float(v)) for k, v in redis.hgetall(name).items()}
            shown = {k: v for k, v in fields.items() if v} or "all 0"
            lines.append(f"    {name.decode()}: {shown}")
    return "\n".join(lines) or "    (none)"


def settle(redis: Redis, timeout_s: float = 120) -> bool:
    """Wait until no job is queued or running (every running counter at 0)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = [int(float(v)) for name in redis.scan_iter(match="running:*") for v in redis.hvals(name)]
        if not redis.llen("tasks") and not any(running):
            return True
        time.sleep(0.5)
    return False


def doctor(system: System) -> str:
    """`spacetime doctor` once every job ended: its output and exit code, with the counters."""
    with Redis.from_url(system.redis_url) as redis:
        settled = settle(redis)
        stored = counters(redis)
    run = system.run_spacetime("doctor")
    output = (run.stdout + run.stderr).strip().replace("\n", "\n    ")
    verdict = "no drift" if run.returncode == 0 and "drift" not in run.stdout else "DRIFT"
    return (
        f"  counters once {'every job ended' if settled else 'the wait ran out (jobs left)'}:\n{stored}\n"
        f"  spacetime doctor: exit {run.returncode}: {verdict}\n    {output}"
    )


# -- 1. a flood of 20 MiB images -------------------------------------------------------------


def noise_png_path() -> Path:
    """A PNG of random RGB pixels, about NOISE_BYTES (it does not compress), made once."""
    path = DATA_DIR / "noise-20MiB.png"
    if not path.exists():
        width = 2048
        pixels = np.random.default_rng(17).integers(0, 256, (NOISE_BYTES // (width * 3), width, 3), dtype=np.uint8)
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, compress_level=1)
    return path


class Flood:
    """A's client: FLOOD_THREADS threads, each posting the noise PNG as fast as answers come,
    until stopped. They run in a process of their own at nice 19: here A's client shares
    the server's 2 cores, as in service it never does (it runs on A's machines), and it
    took half a core of them; at the lowest priority it gets what the server leaves idle.
    Its CPU is printed apart ("A's flood")."""

    def __init__(self, tenant: Tenant, body: bytes):
        context = multiprocessing.get_context("fork")
        self.stop = context.Event()
        self.results = context.Queue()
        self.process = context.Process(
            target=flood, args=(tenant.api, tenant.headers, body, self.stop, self.results), daemon=True
        )
        self.process.start()
        self.answers: Counter = Counter()  # {status code or "cut": count}
        self.tokens: list[str] = []

    def end(self) -> str:
        self.stop.set()
        self.answers, self.tokens = self.results.get(timeout=240)
        self.process.join(30)
        a = self.answers
        fives = sum(n for code, n in a.items() if isinstance(code, int) and code >= 500)
        return f"201 {a[201]}, 429 {a[429]}, 413 {a[413]}, 5xx {fives}, cut {a['cut']} (of {a.total()})"


def flood(api: str, headers: dict, body: bytes, stop, results) -> None:
    """Flood's process: its threads' answers and accepted tokens go back on ``results``."""
    os.nice(19)
    answers: Counter = Counter()
    tokens: list[str] = []
    lock = threading.Lock()

    def loop() -> None:
        with httpx.Client(base_url=api, timeout=120) as http:
            while not stop.is_set() and answers.total() < FLOOD_MAX_REQUESTS:
                try:
                    response = http.post("/randomize", content=body, headers=headers)
                except httpx.TransportError:
                    with lock:
                        answers["cut"] += 1
                    continue
                with lock:
                    answers[response.status_code] += 1
                    if response.status_code == 201:
                        tokens.append(response.json()["token"])

    threads = [threading.Thread(target=loop) for _ in range(FLOOD_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    results.put((answers, tokens))


class PeakMemory:
    """Redis' used_memory (INFO memory), sampled every 0.1 s: the sample where it was
    highest, whose parts say what took the memory (data, or clients' buffers; ``client``'s
    held and reserved bytes, the others' held); the most ``client`` held and reserved by
    its own counter and reservations; the bytes Redis received meanwhile (a refused
    image should not reach it); and the most bytes large images' files took on disk
    (``files``: SPACETIME_IMAGE_FILE_BYTES)."""

    def __init__(self, redis_url: str, client: str, files: Path):
        self.redis = Redis.from_url(redis_url)
        self.client = client
        self.files = files
        self.files_peak = 0
        self.before = self.redis.info("memory")["used_memory"]
        self.received = self.redis.info("stats")["total_net_input_bytes"]
        self.peak = {"used_memory": 0}
        self.held = 0
        # At the peak sample: client's held + reserved bytes, the others' held, image files' bytes.
        self.at_peak = (0, 0, 0)
        self.buffers = ""  # ... and what the clients' buffers held
        held = [int(v) for k, v in self.redis.hgetall("held-bytes").items() if k.decode() != client]
        self.others_before = sum(held)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stop.is_set():
            info = self.redis.info("memory")
            held = {k.decode(): int(v) for k, v in self.redis.hgetall("held-bytes").items()}
            members = self.redis.zrange(f"uploads:image:{self.client}", 0, -1)
            reserved = sum(sum(map(int, m.split()[1:])) for m in members)  # "<token> <size> <output room>"
            mine = held.get(self.client, 0) + reserved
            files = files_bytes(self.files)
            if info["used_memory"] > self.peak["used_memory"]:
                others = sum(held.values()) - held.get(self.client, 0)
                self.peak, self.at_peak = info, (mine, others, files)
                self.buffers = buffers(self.redis)
            self.held = max(self.held, mine)
            self.files_peak = max(self.files_peak, files)
            time.sleep(0.1)

    def end(self) -> str:
        self.stop.set()
        self.thread.join()
        received = self.redis.info("stats")["total_net_input_bytes"] - self.received
        self.redis.close()
        peak = self.peak
        mine, others, files = self.at_peak[0], self.at_peak[1] - self.others_before, self.at_peak[2]
        rest = peak["used_memory"] - self.before - (mine - files) - others
        # B's own held bytes are B's: what A may take is the growth past them.
        taken = peak["used_memory"] - self.before - max(others, 0)
        met = taken <= MAX_HELD_BYTES
        return (
            f"  Redis used_memory: {self.before / MiB:.0f} MiB before, peak {peak['used_memory'] / MiB:.0f} MiB "
            f"(dataset {peak['used_memory_dataset'] / MiB:.0f}, clients' buffers "
            f"{peak['mem_clients_normal'] / MiB:.0f}, AOF buffer {peak['mem_aof_buffer'] / MiB:.0f}); "
            f"A's held-bytes bound {MAX_HELD_BYTES / MiB:.0f} MiB: peak - before - the others' growth "
            f"({taken / MiB:.0f} MiB) within it: {'met' if met else 'MISSED'}\n"
            f"  peak - before: A held + reserved (image bytes) {mine / MiB:.0f} MiB "
            f"(of which {files / MiB:.0f} MiB in files, not in Redis), "
            f"the others' held grew {others / MiB:.0f} MiB, "
            f"the rest (buffers, staged outputs) {rest / MiB:.0f} MiB; "
            f"clients' buffers: {self.buffers}\n"
            f"  A's held-bytes counter + reserved image bytes: at most {self.held / MiB:.0f} MiB: within the bound: "
            f"{'met' if self.held <= MAX_HELD_BYTES else 'MISSED'}; Redis received {received / MiB:.0f} MiB meanwhile; "
            f"image files on disk: at most {self.files_peak / MiB:.0f} MiB"
        )


def files_bytes(folder: Path) -> int:
    """The bytes of the files in ``folder`` now (files come and go as it is read)."""
    total = 0
    for path in folder.glob("*") if folder.is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def buffers(redis: Redis) -> str:
    """What Redis' connections hold in buffers: query (commands coming in) and output (replies
    going out), in all and the largest, by the name of each connection's library."""
    clients = redis.client_list()
    query = [int(c["qbuf"]) + int(c["qbuf-free"]) for c in clients]
    output = [int(c["omem"]) for c in clients]
    return (
        f"{len(clients)} connections, query {sum(query) / MiB:.1f} MiB (largest {max(query) / MiB:.1f}), "
        f"output {sum(output) / MiB:.1f} MiB (largest {max(output) / MiB:.1f})"
    )


def shuffle_for_ever(png: Path) -> None:
    """A's accepted work without our system: its noise PNG shuffled again and again, one
    at a time (as A's running images are capped at 1), at the bulk workers' nice."""
    os.nice(BULK_NICE)
    body = png.read_bytes()
    while True:
        randomize_image(body)


@contextlib.contextmanager
def a_work_bare(png: Path):
    """While the block runs, a process of its own (nothing of our system) does what A's
    accepted images make the bulk worker do: the third ceiling. Unlike a plain loop it
    decodes, shuffles and encodes 20 MiB images, as memory-heavy as A's jobs are."""
    process = multiprocessing.get_context("spawn").Process(target=shuffle_for_ever, args=(png,), daemon=True)
    process.start()
    time.sleep(1.5)  # started and shuffling
    try:
        yield
    finally:
        process.terminate()
        process.join(10)


def ceilings(system: System, b: Tenant, n: int) -> tuple[list[tuple[str, list[dict]]], list[str]]:
    """B's image records with one core taken (by one steady loop, by PULSING_LOOPS pulsing
    ones, by A's images shuffled bare), one after the other; and the cores each part used
    meanwhile."""
    taken, used = [], []
    neighbours = (
        ("taken by a plain loop", lambda: one_core_taken(1)),
        (f"pulsed by {PULSING_LOOPS} loops", lambda: one_core_taken(PULSING_LOOPS)),
        (f"taken by A's images shuffled bare (nice {BULK_NICE})", lambda: a_work_bare(noise_png_path())),
    )
    for how, neighbour in neighbours:
        with neighbour():
            records, cpu = measured(system, f"with one core {how}", lambda: image_records(b, n))
        taken.append((how, records))
        used.append(cpu)
    return taken, used


@dataclass
class Round:
    """One turn of scenario 1: B alone, then B with a flooding A."""

    alone: list[dict]
    loaded: list[dict]
    report: str  # A's answers and Redis's memory meanwhile
    cpu: list[str]  # the cores each part used alone and with A
    tokens: list[str]  # A's accepted jobs

    def line(self, number: int) -> str:
        idle, busy = (p([r["lead_s"] for r in records], 95) * 1e3 for records in (self.alone, self.loaded))
        head = f"  round {number}: B p95 lead alone {idle:.0f} ms, with A {busy:.0f} ms ({busy / idle:.2f}x)"
        return f"{head}\n{self.report}"


def flood_round(system: System, a: Tenant, b: Tenant, n: int, body: bytes, last: Callable[[], str] | None) -> Round:
    """B's images alone, then with A flooding; ``last`` (the kills) runs while A still floods."""
    alone, alone_cpu = measured(system, "alone", lambda: image_records(b, n))
    memory = PeakMemory(system.redis_url, a.name, system.data_dir / "uploads" / "images")
    flood = Flood(a, body)
    time.sleep(2)  # the flood is under way
    loaded, loaded_cpu = measured(system, "with A", lambda: image_records(b, n))
    kills = [last()] if last else []
    answers = flood.end()
    ends = Counter(ended(a, token)["status"] for token in flood.tokens)  # none left running for the next turn
    offered = len(body) * flood.answers.total() / MiB
    report = (
        f"    A's answers: {answers} ({offered:.0f} MiB offered: bodies it started); "
        f"A's accepted jobs: {dict(ends)}\n{memory.end()}"
    )
    return Round(alone, loaded, report, [alone_cpu, loaded_cpu, *kills], flood.tokens)


def set_aof(system: System, on: bool) -> None:
    """Redis's AOF on or off (a measurement: `up` runs it on)."""
    with Redis.from_url(system.redis_url) as redis:
        redis.config_set("appendonly", "yes" if on else "no")


def kills_under_flood(system: System, b: Tenant) -> Callable[[], str]:
    """The last turn's kills: B's images with the interactive dispatcher and a worker killed."""
    return lambda: under_fire(system, lambda: f"{len(image_records(b, 5))}/5 of B's images finished", "interactive")


def scenario_1(system: System, sizes: Sizes) -> str:
    """B alone and B with A in turns, ``sizes.rounds`` times: the ratio is of B's jobs of
    every turn together, so that the machine's noise over the minutes falls on both sides.
    A turn ends once A's kept outputs have expired (RESULT_TTL_S): the next starts from the
    same Redis, with A's bound free."""
    a, b = Tenant(system, "hostile1-a", "keys"), Tenant(system, "hostile1-b", "keys")
    image_records(b, 5)  # warm up
    body = noise_png_path().read_bytes()
    taken, ceiling_cpu = ceilings(system, b, sizes.images)
    rounds = []
    for number in range(1, sizes.rounds + 1):
        if rounds:
            time.sleep(RESULT_TTL_S + 1)  # the last turn's outputs of A gone: its bound and Redis as they were
        if sizes.aof_turns:
            set_aof(system, number % 2 == 1)
        last = kills_under_flood(system, b) if number == sizes.rounds else None
        rounds.append(flood_round(system, a, b, sizes.images, body, last))
    if sizes.aof_turns:
        set_aof(system, True)  # as `up` runs it, for the scenarios after
    alone = [r for turn in rounds for r in turn.alone]
    loaded = [r for turn in rounds for r in turn.loaded]
    b_jobs = len(alone) + sum(len(records) for _, records in taken) + len(loaded)
    by_aof = [(f"AOF {state}, ", rounds[first::2]) for first, state in enumerate(("on", "off"))]
    return (
        f"1. A floods {len(body) / MiB:.1f} MiB noise PNGs ({FLOOD_THREADS} threads); B sends cat.png jobs; "
        f"{sizes.rounds} rounds of B alone then B with A, {sizes.images} of B's jobs each"
        + (" (Redis's AOF on in rounds 1, 3 ..., off in 2, 4 ...: a measurement)" if sizes.aof_turns else "")
        + "\n"
        + "".join(turn.line(number) + "\n" for number, turn in enumerate(rounds, 1))
        + f"  B's 5xx: 0 in {b_jobs} jobs (any answer but 201 stops the run)\n"
        f"{t1_line(alone, loaded)}\n"
        + "".join(
            f"  {label}{t1_line([r for t in turns for r in t.alone], [r for t in turns for r in t.loaded]).strip()}\n"
            for label, turns in (by_aof if sizes.aof_turns else [])
        )
        + "".join(ceiling_line(how, alone, records, loaded) + "\n" for how, records in taken)
        + "\n".join([*ceiling_cpu, *rounds[-1].cpu])
    )


# -- 2. one endless number -------------------------------------------------------------------


def digit_run(size: int) -> Path:
    """A file of one number of ``size`` digits (and a newline), written in chunks."""
    path = DATA_DIR / f"one-number-{size}.txt"
    if path.exists() and path.stat().st_size == size + 1:
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    chunk = b"8" * (16 * MiB)
    with open(path, "wb") as file:
        left = size
        while left:
            file.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
        file.write(b"\n")
    return path


def upload(tenant: Tenant, path: Path) -> str:
    """Stream a file as the body of POST /even-sum; its token."""
    with open(path, "rb") as file:
        response = tenant.http.post(
            "/even-sum", content=file, headers={**tenant.headers, "Content-Type": "text/plain"}, timeout=600
        )
    response.raise_for_status()
    return response.json()["token"]


def b_sums(b: Tenant, path: Path, answer: dict, n: int) -> tuple[list[float], int]:
    """``n`` of B's even-sums one after another: lead times, and how many were exact."""
    records = [ended(b, b.sum_file(path)) for _ in range(n)]
    good = sum(r["status"] == "finished" and exact(b, r["token"], answer) for r in records)
    return [r["lead_s"] for r in records], good


def scenario_2(system: System, sizes: Sizes) -> str:
    a, b = Tenant(system, "hostile2-a", "keys"), Tenant(system, "hostile2-b", "keys")
    files = [digit_run(sizes.big), digit_run(sizes.medium)]
    b_file, answer = ensure_file(sizes.b_file, "lines")
    b_sums(b, b_file, answer, 1)  # warm up
    alone, alone_good = b_sums(b, b_file, answer, sizes.b_sums)
    workers = pids(system, "worker")
    records: dict[Path, dict] = {}
    threads = [threading.Thread(target=lambda f=f: records.update({f: ended(a, upload(a, f))})) for f in files]
    for thread in threads:
        thread.start()
    loaded, loaded_good = b_sums(b, b_file, answer, sizes.b_sums)
    for thread in threads:
        thread.join(JOB_TIMEOUT_S)
    after = pids(system, "worker")
    kills = under_fire(system, sums_under_fire(b, b_file, answer, 2))
    return (
        f"2. A uploads one number of {sizes.big / MB:.0f} MB and one of {sizes.medium / MB:.0f} MB; "
        f"B runs {sizes.b_file / MB:.0f} MB even-sums\n"
        + "".join(a_ending(f, records.get(f)) for f in files)
        + f"  workers: pids {sorted(workers)} before, {sorted(after)} after: "
        f"{'no restart' if workers == after else 'RESTARTED'}\n"
        f"  B exact: {alone_good}/{len(alone)} alone, {loaded_good}/{len(loaded)} with A\n"
        f"  B lead median alone {statistics.median(alone):.2f} s, with A {statistics.median(loaded):.2f} s "
        f"({statistics.median(loaded) / statistics.median(alone):.2f}x); max {max(alone):.2f} s, {max(loaded):.2f} s\n"
        f"{kills}"
    )


def a_ending(path: Path, record: dict | None) -> str:
    """How one of A's jobs ended, and whether its error is the one expected."""
    if record is None:
        return f"  A's {path.name}: NOT ended\n"
    clear = record["status"] == "errored" and f"longer than {MAX_TOKEN_BYTES} bytes" in (record["error"] or "")
    return (
        f"  A's {path.name}: {record['status']} after {record['lead_s']:.2f} s "
        f"({'clear' if clear else 'NOT the expected'} message): {record['error']}\n"
    )


# -- 3. many slow uploads at once ------------------------------------------------------------


def slow_upload(system: System, tenant: Tenant, seconds: float) -> int | str:
    """A chunked POST /even-sum (no Content-Length) sending a chunk every SLOW_INTERVAL_S
    for ``seconds``: the status of the answer, read as soon as the API sends it (it may
    answer before the body ends), or "cut" when the connection closed with no answer."""
    api = urlsplit(system.api)
    auth = tenant.headers["Authorization"]
    head = (
        f"POST /even-sum HTTP/1.1\r\nHost: {api.netloc}\r\nAuthorization: {auth}\r\n"
        "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection((api.hostname, api.port), timeout=60) as sock:
        try:
            sock.sendall(head.encode())
            for _ in range(int(seconds / SLOW_INTERVAL_S)):
                if select.select([sock], [], [], SLOW_INTERVAL_S)[0]:
                    break  # answered early
                sock.sendall(b"%x\r\n%s\r\n" % (len(SLOW_CHUNK), SLOW_CHUNK))
            else:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # closed on us: what it said, if anything, is still to read
        return status_line(sock)


def status_line(sock: socket.socket) -> int | str:
    try:
        first = sock.recv(4096).split(b"\r\n", 1)[0].split()
    except OSError:
        return "cut"
    return int(first[1]) if len(first) > 1 else "cut"


def b_uploads(b: Tenant, body: bytes, answer: dict, n: int) -> tuple[list[float], list[float], int]:
    """``n`` of B's uploads one after another: POST latencies, lead times, exact results."""
    posts, leads, good = [], [], 0
    for _ in range(n):
        start = time.perf_counter()
        response = b.http.post("/even-sum", content=body, headers={**b.headers, "Content-Type": "text/plain"})
        posts.append(time.perf_counter() - start)
        if response.status_code != 201:
            continue
        record = ended(b, response.json()["token"])
        leads.append(record["lead_s"])
        good += record["status"] == "finished" and exact(b, record["token"], answer)
    return posts, leads, good


def scenario_3(system: System, sizes: Sizes) -> str:
    a, b = Tenant(system, "hostile3-a", "keys"), Tenant(system, "hostile3-b", "keys")
    path, answer = ensure_file(MB, "lines")
    body = path.read_bytes()
    b_uploads(b, body, answer, 2)  # warm up
    alone = b_uploads(b, body, answer, sizes.b_uploads)
    answers: list = []
    threads = [
        threading.Thread(target=lambda: answers.append(slow_upload(system, a, sizes.slow_s)), daemon=True)
        for _ in range(SLOW_UPLOADS)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)  # every one of A's uploads has started
    loaded = b_uploads(b, body, answer, sizes.b_uploads)
    kills = under_fire(system, sums_under_fire(b, path, answer, 2))
    for thread in threads:
        thread.join(sizes.slow_s + 90)
    return (
        f"3. A starts {SLOW_UPLOADS} chunked uploads at once ({len(SLOW_CHUNK) // 1024} KiB every "
        f"{SLOW_INTERVAL_S} s for {sizes.slow_s:.0f} s, no length; cap {MAX_UPLOADS} at once); "
        f"B uploads a 1 MB file one after another\n"
        f"  A's answers: {dict(Counter(answers))}\n"
        f"{upload_line('alone', alone)}\n{upload_line('with A', loaded)}\n{kills}"
    )


def upload_line(label: str, figures: tuple[list[float], list[float], int]) -> str:
    posts, leads, good = figures
    return (
        f"  B {label:6}: {len(leads)}/{len(posts)} uploads accepted, {good} exact; "
        f"POST p50/p95 {ms(posts, 50)}/{ms(posts, 95)} ms, lead p50/p95 {ms(leads, 50)}/{ms(leads, 95)} ms"
    )


# -- 4. kills under load ---------------------------------------------------------------------


def scenario_4(system: System, sizes: Sizes) -> str:
    a, b = Tenant(system, "hostile4-a", "keys"), Tenant(system, "hostile4-b", "keys")
    path, answer = ensure_file(sizes.b_file, "lines")
    images = threading.Thread(target=lambda: image_records(a, sizes.images), daemon=True)
    images.start()
    first = under_fire(system, sums_under_fire(b, path, answer, 4))
    second = under_fire(system, sums_under_fire(b, path, answer, 4))
    images.join(JOB_TIMEOUT_S)
    ends = Counter(ended(a, token)["status"] for token in a.tokens)
    return (
        f"4. A sends {sizes.images} cat.png jobs one after another and B runs {sizes.b_file / MB:.0f} MB "
        f"even-sums, 4 at once, twice, each time with a dispatcher and a worker killed\n"
        f"{first}\n{second}\n  A's images: {dict(ends)}"
    )


# -- 5. small PNGs, large shuffles -------------------------------------------------------------


def scenario_5(system: System, sizes: Sizes) -> str:
    """A's jobs hold room for their shuffle's bound (compute.png.output_bound), not for
    their input's size: Redis stays within A's bound, however small A's PNGs are."""
    a, b = Tenant(system, "hostile5-a", "keys"), Tenant(system, "hostile5-b", "keys")
    body = ramps_png(RAMPS_SIDE)
    image_records(b, 5)  # warm up
    turn = flood_round(system, a, b, sizes.images, body, kills_under_flood(system, b))
    answers = [a.http.get(f"/randomize/{token}/result", headers=a.headers) for token in turn.tokens]
    outputs = [len(answer.content) for answer in answers if answer.status_code == 200]  # not yet expired
    return (
        f"5. A floods {len(body) / 1e3:.0f} KB PNGs whose shuffle may take {output_bound(body) / MiB:.1f} MiB "
        f"({FLOOD_THREADS} threads); B sends cat.png jobs; {sizes.images} of B's jobs alone, then with A\n"
        f"{turn.line(1)}\n  A's outputs: {len(outputs)}, {sum(outputs) / MiB:.0f} MiB in all, "
        f"{max(outputs, default=0) / len(body):.0f} times the PNG at most\n"
        f"  B's 5xx: 0 in {len(turn.alone) + len(turn.loaded)} jobs (any answer but 201 stops the run)\n"
        + "\n".join(turn.cpu)
    )


SCENARIOS = {1: scenario_1, 2: scenario_2, 3: scenario_3, 4: scenario_4, 5: scenario_5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=int, choices=sorted(SCENARIOS), help="run only this one")
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole bench in a few minutes")
    parser.add_argument("--big", type=parse_size, help="A's first file of one digit run (default 2GB)")
    parser.add_argument("--medium", type=parse_size, help="A's second (default 300MB)")
    parser.add_argument("--b-size", type=parse_size, help="B's even-sum file (default 100MB)")
    parser.add_argument("--rounds", type=int, help="scenario 1: rounds of B alone then B with A (default 3)")
    parser.add_argument("--aof-turns", action="store_true", help="scenario 1: Redis's AOF off in every other round")
    parser.add_argument(
        "--image-file-bytes",
        type=int,
        help="SPACETIME_IMAGE_FILE_BYTES for the run (0: every image's bytes in Redis, as before 4 Dec)",
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    sizes = Sizes(**{**sizes.__dict__, **chosen(args)})
    print(core_check(), flush=True)
    env = {
        "SPACETIME_DEFAULT_MAX_HELD_BYTES": str(MAX_HELD_BYTES),
        "SPACETIME_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES),
        "SPACETIME_DEFAULT_MAX_UPLOADS": str(MAX_UPLOADS),
        "SPACETIME_RESULT_TTL_S": str(RESULT_TTL_S),
    }
    if args.image_file_bytes is not None:
        env["SPACETIME_IMAGE_FILE_BYTES"] = str(args.image_file_bytes)
    with tempfile.TemporaryDirectory() as tmp, running_system(Path(tmp), "keys", [DATA_DIR], **env) as system:
        print(f"-- keys mode: spacetime up, {system.api}; {json.dumps(env)}", flush=True)
        for number in [args.scenario] if args.scenario else SCENARIOS:
            print(SCENARIOS[number](system, sizes), flush=True)
            print(doctor(system), flush=True)


def chosen(args: argparse.Namespace) -> dict:
    """The sizes given on the command line, over the defaults."""
    given = {
        "big": args.big,
        "medium": args.medium,
        "b_file": args.b_size,
        "rounds": args.rounds,
        "aof_turns": args.aof_turns or None,
    }
    return {name: value for name, value in given.items() if value is not None}


if __name__ == "__main__":
    main()
