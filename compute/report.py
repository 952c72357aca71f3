"""Performance-report capture and per-job task timings, for dispatchers and notebooks.

A Dask performance report covers a time window across the whole cluster: jobs that
run at the same time appear in each other's reports. ``task_compute_s`` is the exact
per-job figure: it sums the compute intervals of the tasks whose keys carry the job's
prefix, from the scheduler's task stream.
"""

from distributed import Client, get_client, performance_report


class JobReport(performance_report):
    """``performance_report`` written to an fsspec URL, its code section naming the job.

    The stock report shows the calling code; for a dispatcher that is always the same
    line, so we show what identifies the job instead: its token and task-key prefix.
    """

    def __init__(self, url: str, description: str, storage_options: dict | None = None):
        super().__init__(filename=url, storage_options=storage_options)
        self.description = description

    def __exit__(self, exc_type, exc_value, traceback):
        get_client().sync(self.__aexit__, exc_type, exc_value, traceback, code=self.description)


def task_compute_s(client: Client, key_prefix: str, since: float) -> float:
    """Seconds spent computing the tasks whose key starts with ``key_prefix`` since ``since``."""
    total = 0.0
    for task in client.get_task_stream(start=since):
        if str(task["key"]).startswith(key_prefix):
            total += sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
    return total
