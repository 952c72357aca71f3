"""Nanny preload: ``dask worker --preload-nanny compute.retire``.

On SIGTERM, plain ``dask worker`` (distributed 2026.8) closes its nanny, which stops the
worker process at once: the results the worker holds are lost, and the scheduler, seeing
an unexpected departure, recomputes them and counts the tasks that were running against
``allowed-failures`` (a task that reaches the limit errors its job with KilledWorker).
ECS sends that SIGTERM on every scale-in, rolling deployment and Spot interruption.

This preload makes SIGTERM retire the worker first: the scheduler stops giving it tasks,
copies every result only it holds to another worker, and removes it as an expected
departure (running tasks move elsewhere, no failure counted). Then dask's own SIGTERM
handling closes the process as before. The ECS stop timeout must leave room for both
(``RETIRE_TIMEOUT_S`` plus dask's 10 s close).

It is a nanny preload, not a worker preload, because the signal reaches the nanny: it is
the container's main process, and the worker is its child.
"""

import asyncio
import logging
import os
import signal

# A child of "distributed": dask worker prints that logger's records, and ours with them.
log = logging.getLogger(f"distributed.{__name__}")

# Moving a worker's results elsewhere takes seconds (they are small partial sums and images
# in flight); past this we stop waiting and close anyway, well inside ECS's 120 s limit.
RETIRE_TIMEOUT_S = 60.0
# A nanny hears its worker's address a moment after the worker has registered with the
# scheduler (and may already hold results); a SIGTERM in that moment waits this long for it.
STARTING_S = 10.0


def dask_setup(nanny) -> None:
    """Put ``retire then close`` in front of whatever handles SIGTERM in this process."""
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # set outside Python: we cannot hand back to it, so default to exit
        previous = signal.SIG_DFL
    pending: set[asyncio.Task] = set()  # the loop keeps only weak references to its tasks

    def on_sigterm() -> None:
        task = loop.create_task(_retire_then_close(nanny, loop, previous))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)


async def _retire_then_close(nanny, loop: asyncio.AbstractEventLoop, previous) -> None:
    loop.remove_signal_handler(signal.SIGTERM)
    try:
        await asyncio.wait_for(retire(nanny), RETIRE_TIMEOUT_S)
    except Exception:  # a scheduler that is gone or slow must not keep the worker from stopping
        log.warning("could not retire %s before closing", nanny.worker_address, exc_info=True)
    # Hand the signal to its previous handler: dask's own (close the nanny), or the default.
    signal.signal(signal.SIGTERM, previous)
    os.kill(os.getpid(), signal.SIGTERM)


async def retire(nanny) -> None:
    """Ask the scheduler to retire this nanny's worker; returns once its data lives elsewhere."""
    if await started_worker(nanny) is None:  # the worker never started: nothing to hand over
        return
    log.info("SIGTERM: retiring %s before closing", nanny.worker_address)
    retired = await nanny.scheduler.retire_workers(workers=[nanny.worker_address], close_workers=False, remove=True)
    if nanny.worker_address not in retired:
        # The scheduler keeps a worker whose data has nowhere to go (the last one); closing
        # now loses that data, as plain SIGTERM would have.
        log.warning("the scheduler could not retire %s: no other worker to take its data", nanny.worker_address)


async def started_worker(nanny) -> str | None:
    """The address of the nanny's worker, waited for while its process is starting (it
    can have registered, and taken tasks, before the nanny knows it: seen in CI as a SIGTERM
    33 ms after registration that lost the worker's result); None when it never started."""
    deadline = asyncio.get_running_loop().time() + STARTING_S
    while nanny.worker_address is None and nanny.process is not None:
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return nanny.worker_address
