"""Run a command that dies with its parent: ``python -m backend.run.lifeline PARENT_PID COMMAND [ARGS...]``.

`spacetime up` starts every child through this, so that no child outlives it, even
when `up` is SIGKILLed. It asks Linux to send SIGTERM to this process when its parent
dies (PR_SET_PDEATHSIG, which survives exec), checks that the parent did not die before
that, then becomes the command (exec: same pid, nothing stays in between).

Why not ``preexec_fn``: that runs Python between fork and exec in a copy of `up`, which
has threads (the Dask scheduler's event loop, its nannies); a lock another thread held
at the fork stays held forever in the copy and can hang the child. Here the prctl runs
in a fresh interpreter that has no such threads. Only the standard library is imported,
so the detour costs one bare interpreter start (tens of milliseconds).

Elsewhere than Linux there is no parent-death signal: it only execs, and `up` relies on
its own clean-up.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def main(argv: list[str]) -> None:
    parent, command = int(argv[0]), argv[1:]
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # it died before the prctl: end as its signal would have ended us
            os.kill(os.getpid(), signal.SIGTERM)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
