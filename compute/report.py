"""Per-job performance reports that cost the shared scheduler almost nothing.

Dask's ``performance_report`` has the scheduler build every plot (~0.5-1 s of its event
loop, which every job on the cluster waits for). Here the work is split:

1. ``capture_trace`` runs when a job ends and makes two cheap calls: the scheduler's
   task-stream records since the job started (one call; the job's own records are kept),
   and the profiles of the workers that ran the job's tasks, asked of those workers
   directly (the scheduler is not on that path). The result is plain JSON.
2. ``render_report`` turns a trace and the job's timing record into a self-contained
   HTML page (BokehJS inline, nothing fetched from the network): the job's task stream,
   its workers' profile, and its timing record. It runs wherever someone asks for the
   report, once, never on the scheduler.

``task_compute_s`` sums the compute intervals of a trace's tasks: the exact per-job
figure, where a time window would also count other jobs' tasks.
"""

import asyncio
import html
import json
import os
import site
import sysconfig
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dask.utils import key_split
from distributed import profile

if TYPE_CHECKING:
    from distributed import Client

# Seconds before the job's start that the task-stream query reaches back: worker and
# dispatcher clocks may differ a little, and a record missed is a task missing from the plot.
CLOCK_SLACK_S = 1.0
PLOT_WIDTH = 1000
# How long a worker has to send its profile; the dispatcher waits for it after the job.
PROFILE_TIMEOUT_S = 2.0


def capture_trace(
    client: "Client", key_prefix: str, start: float, stop: float, profile_min_s: float = 0.0
) -> dict[str, Any]:
    """The raw performance data of the job whose task keys start with ``key_prefix`` and
    that ran from ``start`` to ``stop`` (epoch seconds), as JSON-able data.

    Parameters
    ----------
    client
        A ``distributed.Client`` connected to the cluster that ran the job.
    key_prefix
        The prefix of the job's task keys (e.g. ``"even-sum-<token>"``).
    start, stop
        When the job ran, in epoch seconds.
    profile_min_s
        Ask the workers for their profile only when the job's tasks computed at least
        this long (compute.defaults.PROFILE_MIN_COMPUTE_S is a sensible floor); else the trace's
        profile is None and the report says why.

    Returns
    -------
    dict
        ``{"key_prefix", "start", "stop", "tasks": [...], "profile": {...}}``: the job's
        task-stream records and the merged profile of the workers that ran them.

    Notes
    -----
    The scheduler keeps task-stream records only once a client has asked for them: call
    ``client.get_task_stream(start=0, stop=0)`` once before the job starts (dispatchers
    do it when they connect), or the trace of a job that ran before is empty.

    Examples
    --------
    >>> client.get_task_stream(start=0, stop=0)  # doctest: +SKIP
    >>> start = time.time()  # doctest: +SKIP
    >>> blocks, total = submit_even_sum(client, "numbers.txt", key_prefix="trial-1")  # doctest: +SKIP
    >>> total.result()["sum"]  # doctest: +SKIP
    >>> trace = capture_trace(client, "trial-1", start, time.time())  # doctest: +SKIP
    >>> len(trace["tasks"]), task_compute_s(trace)  # doctest: +SKIP
    """
    records = client.get_task_stream(start=start - CLOCK_SLACK_S)
    tasks = [_task(record) for record in records if str(record["key"]).startswith(key_prefix)]
    workers = sorted({task["worker"] for task in tasks})
    group = key_split(tasks[0]["key"]) if tasks else None
    trace = {"key_prefix": key_prefix, "start": start, "stop": stop, "tasks": tasks, "profile": None}
    if _compute_s(tasks) >= profile_min_s:
        trace["profile"] = client.sync(_worker_profiles, client, workers, group, start - CLOCK_SLACK_S, stop)
    else:
        trace["profile_min_s"] = profile_min_s
    return trace


def task_compute_s(trace: dict[str, Any]) -> float:
    """Seconds the trace's tasks spent computing, summed over all of them."""
    return _compute_s(trace["tasks"])


def compute_spans(trace: dict[str, Any]) -> list[tuple[float, float]]:
    """The (start, stop) of every compute interval of the trace's tasks, in epoch seconds
    by the workers' clocks: when the job used the cluster, for accounting by the minute."""
    return _spans(trace["tasks"])


def _compute_s(tasks: list[dict[str, Any]]) -> float:
    return sum(stop - start for start, stop in _spans(tasks))


def _spans(tasks: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return [
        (span["start"], span["stop"]) for task in tasks for span in task["startstops"] if span["action"] == "compute"
    ]


def render_report(trace: dict[str, Any], timing: dict[str, Any], title: str) -> str:
    """A self-contained HTML page: the task stream, the worker profile, the timing record.

    Parameters
    ----------
    trace
        What ``capture_trace`` returned for the job.
    timing
        The job's timing record (token, kind, client, status, queue_wait_s, exec_s...),
        shown as a table; any JSON-able dict will do.
    title
        The page's title.

    Returns
    -------
    str
        The whole HTML page. BokehJS is inline: it opens with no network.

    Examples
    --------
    >>> page = render_report(trace, {"kind": "even-sum", "note": "trial 1"}, "trial 1")  # doctest: +SKIP
    >>> pathlib.Path("trial-1.html").write_text(page)  # doctest: +SKIP
    """
    # Imported here: bokeh takes a second to import, and the API that serves these pages
    # should not pay it at every start, only at the first report someone opens.
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models.widgets import Div
    from bokeh.resources import INLINE

    layout = column(
        Div(text=f"<h1>{html.escape(title)}</h1>{_timing_table(timing)}", width=PLOT_WIDTH),
        _task_stream_figure(shown_tasks(trace["tasks"])),
        _profile_figure(trace),
        sizing_mode="fixed",
    )
    return file_html(layout, resources=INLINE, title=title)


def shown_tasks(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tasks as a client may see them: each worker named by its rank in the job
    ("worker 1"), not by its address on the cluster's network."""
    names = {address: f"worker {i}" for i, address in enumerate(sorted({t["worker"] for t in tasks}), 1)}
    return [{**task, "worker": names[task["worker"]]} for task in tasks]


def shown_path(filename: str) -> str:
    """A profiled frame's file as a client may see it: the path inside its package
    (``numba/core/dispatcher.py``, ``compute/even_sum.py``), not where it lies on a server."""
    roots = [*site.getsitepackages(), sysconfig.get_paths()["stdlib"], str(Path(__file__).parent.parent)]
    for root in sorted(roots, key=len, reverse=True):
        if filename.startswith(root + os.sep):
            return filename[len(root) + 1 :]
    return os.path.basename(filename)


def _task(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a task-stream record that the report draws, as plain JSON."""
    return {
        "key": str(record["key"]),
        "worker": record["worker"],
        "thread": record.get("thread", 0),
        "status": record.get("status", "OK"),
        "startstops": [
            {"action": span["action"], "start": span["start"], "stop": span["stop"]} for span in record["startstops"]
        ],
    }


async def _worker_profiles(client: "Client", workers: Iterable[str], group: str | None, start: float, stop: float):
    """The profiles of ``workers`` over [start, stop] for one task group, asked of each
    worker directly (at once, each within PROFILE_TIMEOUT_S) and merged here. A worker
    that left the cluster, or does not answer in time, is left out of the picture: a
    report must never hold up its dispatcher."""
    if group is None:
        return profile.create()
    alive = set(client.scheduler_info().get("workers", {}))

    async def one(worker: str):
        try:
            return await asyncio.wait_for(
                client.rpc(worker).profile(start=start, stop=stop, key=group, server=False), PROFILE_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return None

    states = await asyncio.gather(*(one(worker) for worker in workers if worker in alive))
    answered = [state for state in states if state is not None]
    return profile.merge(*answered) if answered else profile.create()


def _timing_table(timing: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(str(name))}</th><td>{_shown(str(name), value)}</td></tr>"
        for name, value in timing.items()
    )
    return f"<h2>Timing record</h2><table class='timing'>{rows}</table>"


def _shown(name: str, value: Any) -> str:
    """A field as a person reads it: instants (``*_at``, epoch s) as UTC times, durations
    (``*_s``) in units that fit; the stored number stays in the tooltip."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if name.endswith("_at"):
            instant = datetime.fromtimestamp(value, UTC).isoformat(sep=" ", timespec="milliseconds")
            return f"<time datetime='{instant}' title='{value}'>{instant.removesuffix('+00:00')} UTC</time>"
        if name.endswith("_s"):
            return f"<span title='{value} s'>{duration(value)}</span>"
    return html.escape(json.dumps(value))


def duration(seconds: float) -> str:
    """``seconds`` in ms below a second, s below a minute, then min and s."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def _task_stream_figure(tasks: list[dict[str, Any]]):
    from bokeh.models import ColumnDataSource, HoverTool, Range1d
    from bokeh.plotting import figure
    from distributed.diagnostics.task_stream import rectangles

    data = rectangles(tasks)
    source = ColumnDataSource(data)
    plot = figure(
        title="Task stream: this job's tasks, one row per worker thread",
        x_axis_type="datetime",
        width=PLOT_WIDTH,
        height=max(150, 60 + 40 * len(set(data["worker_thread"]))),
        tools="xwheel_zoom,xpan,reset,save",
        toolbar_location="above",
        name="task-stream",
    )
    plot.rect(
        x="start", y="y", width="duration", height=0.4, fill_color="color", line_color="color",
        fill_alpha="alpha", source=source,
    )  # fmt: skip
    plot.add_tools(HoverTool(tooltips=[("task", "@key"), ("action", "@name"), ("time", "@duration_text")]))
    plot.yaxis.visible = False
    if not tasks:
        plot.y_range = Range1d(start=-1, end=1)
    return plot


def _profile_figure(trace: dict[str, Any]):
    state = trace["profile"] or profile.create()
    data = profile.plot_data(state)
    data["filename"] = [shown_path(filename) for filename in data["filename"]]
    plot, _ = profile.plot_figure(data, width=PLOT_WIDTH, height=400)
    plot.title.text = "Worker profile: where the job's tasks spent their time (sampled)"
    if trace["profile"] is None:
        plot.title.text = (
            f"Worker profile: not taken, the job's tasks computed for {_compute_s(trace['tasks']) * 1e3:.0f} ms "
            f"(profiles from {trace.get('profile_min_s', 0) * 1e3:.0f} ms: SPACETIME_REPORT_PROFILE_MIN_S)"
        )
    plot.name = "profile"
    return plot
