"""Start-up's waits (a remote engine server still loading, a database still starting) end at
once when the server is told to stop (SIGTERM during start-up), instead of running out their
`LEA_REMOTE_WAIT_SECONDS` / `LEA_DATABASE_WAIT_SECONDS` first.

One server per process: the flag is the process's. The app sets it when its lifespan ends
(uvicorn's shutdown), and clears it once its start-up is over, so that a later wait in the same
process (another app in a test, a CLI command) waits as it should."""

from __future__ import annotations

import threading

_stopping = threading.Event()


class StartupStopped(Exception):
    """The server is stopping: start-up gave up waiting."""


def reset() -> None:
    """Start-up's waits may wait (again)."""
    _stopping.clear()


def stop_waiting() -> None:
    """The server is stopping: every start-up wait ends now, raising StartupStopped."""
    _stopping.set()


def pause(seconds: float, waiting_for: str) -> None:
    """Sleep `seconds` between two tries at `waiting_for`; StartupStopped at once when the server
    is stopping (and before sleeping, when it already is)."""
    if _stopping.wait(seconds):
        raise StartupStopped(f"the server is stopping: start-up stopped waiting for {waiting_for}")
