"""The reports store: each job's timing record, trace and performance report.

For every job, finished or errored, the reports store (a folder when embedded, S3 in
production) holds ``<token>.json`` (the timing record, also logged as one JSON line),
``<token>.trace.json`` (its raw task stream and worker profile, captured by the
dispatcher after the final write with two cheap calls: compute.report) and, once someone
asks for it, ``<token>.html``: the performance report, rendered by the API from the
trace and kept for the next reader. Nothing here runs on the scheduler.
"""

import json
import logging
from dataclasses import asdict
from typing import Any

import fsspec
from distributed import Client

from backend.core.job import Job
from backend.core.settings import Settings
from backend.telemetry.timing import Timing
from compute.report import capture_trace, render_report

log = logging.getLogger("spacetime.timing")


def report_store_url(settings: Settings, token: str, suffix: str) -> str:
    return f"{settings.reports_url}/{token}.{suffix}"


class ReportWriter:
    """Reads and writes a job's files in the reports store."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def save_timing(self, timing: Timing) -> None:
        """Log the record as one JSON line and write it to the reports store."""
        line = json.dumps(asdict(timing), separators=(",", ":"))
        log.info(line)
        self._write(report_store_url(self.settings, timing.token, "json"), line)

    def capture(self, client: Client, job: Job, started: float, timing: Timing) -> dict[str, Any]:
        """Capture and store the job's trace, and return it (compute.report reads it:
        ``task_compute_s``, ``compute_spans``)."""
        trace = capture_trace(
            client, f"{job.kind}-{job.token}", started, timing.finished_at, self.settings.report_profile_min_s
        )
        self._write(report_store_url(self.settings, job.token, "trace.json"), json.dumps(trace))
        return trace

    def report(self, token: str) -> str | None:
        """The job's performance report (HTML): the stored one, or rendered now from its
        trace and timing record and stored. None when the job has no trace."""
        html_url = report_store_url(self.settings, token, "html")
        try:
            return self._read(html_url)
        except FileNotFoundError:
            pass
        try:
            trace = json.loads(self._read(report_store_url(self.settings, token, "trace.json")))
            timing: dict[str, Any] = json.loads(self._read(report_store_url(self.settings, token, "json")))
        except FileNotFoundError:
            return None
        # The page is the client's: it shows the record without the store's own paths.
        shown = {name: value for name, value in timing.items() if name not in ("report_url", "timing_url")}
        page = render_report(trace, shown, f"{timing.get('kind', 'job')} job {token}")
        self._write(html_url, page)
        return page

    def _write(self, url: str, text: str) -> None:
        with fsspec.open(url, "w", auto_mkdir=True, **self.settings.storage_options(url)) as f:
            f.write(text)

    def _read(self, url: str) -> str:
        with fsspec.open(url, "r", **self.settings.storage_options(url)) as f:
            return f.read()
