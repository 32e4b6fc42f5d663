"""Several DICOM listener processes on one port (``dicom.processes``, ``readingroom receive --processes N``).

One Python process decodes PDUs on one core at a time (the GIL), so one listener cannot use a
second core however many associations arrive. With ``dicom.processes`` above one, the command's
process becomes a supervisor:

1. it runs the start-up clean-up and reconcile once (``IntakeService.clean_up``), before any
   listener listens, as a single listener does;
2. it starts N listener processes (fresh interpreters, ``multiprocessing`` "spawn"). Each binds
   the port with ``SO_REUSEPORT``, so the kernel spreads the incoming connections over them, and
   runs its own study monitor (completion is one conditional UPDATE, so a study whose instances
   reach two processes is completed once: ``triage.studies.complete_due_studies``). The first one
   also runs the HL7 order listener when ``hl7.enabled``;
3. it waits until each has answered that it listens, then restarts any that dies (a crash, or
   kill -9): what it had acknowledged is stored, what it had not the sender sends again;
4. SIGTERM or Ctrl-C stops them all.

The association limits (``dicom.max_associations`` and the rest) apply per process.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from typing import Any

from readingroom.db import Database
from readingroom.errors import ReadingRoomError
from readingroom.settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 120        # a listener process must listen within this of its start
RESTART_WINDOW_S = 30        # a process that dies this soon after its start counts as failing to start
MAX_QUICK_DEATHS = 3         # ...and after this many in a row the group stops with an error
STOP_TIMEOUT_S = 20


def _listener_process(overrides: dict[str, Any], index: int, ready: Any) -> None:
    """One listener process: the listener and its study monitor, no start-up reconcile (the
    supervisor did it). Runs until SIGTERM or Ctrl-C."""
    from readingroom.cli import Context, wait_for_stop
    from readingroom.jobs import open_queue
    from triage.service import IntakeService

    ctx = Context(overrides, log_to_file=True)
    service = IntakeService(ctx.settings, ctx.db, open_queue(ctx.db, ctx.settings.jobs))
    service.start(reconcile=False)
    log.info("listener process %d of %d listening on port %d", index + 1, ctx.settings.dicom.processes,
             service.listener.port)
    ready.set()
    try:
        wait_for_stop()
    finally:
        service.stop()


class ListenerGroup:
    """The supervisor of ``settings.dicom.processes`` listener processes on one port."""

    def __init__(self, settings: Settings, overrides: dict[str, Any]) -> None:
        self.settings = settings
        self.overrides = overrides
        self.count = settings.dicom.processes
        self._mp = multiprocessing.get_context("spawn")
        self._procs: list[Any] = [None] * self.count
        self._started: list[float] = [0.0] * self.count
        self._quick_deaths = 0
        self._stopping = threading.Event()

    def _overrides_for(self, index: int) -> dict[str, Any]:
        """The command's overrides, plus: the HL7 order listener in the first process only."""
        merged = {key: dict(value) if isinstance(value, dict) else value for key, value in self.overrides.items()}
        if index > 0:
            merged.setdefault("hl7", {})["enabled"] = False
        return merged

    def _spawn(self, index: int) -> Any:
        ready = self._mp.Event()
        proc = self._mp.Process(target=_listener_process, args=(self._overrides_for(index), index, ready),
                                name=f"readingroom-listener-{index + 1}", daemon=False)
        proc.start()
        self._procs[index], self._started[index] = proc, time.monotonic()
        return proc, ready

    def start(self) -> None:
        """Start every process and wait until each listens (ReadingRoomError if one does not)."""
        waiting = [self._spawn(index) for index in range(self.count)]
        deadline = time.monotonic() + READY_TIMEOUT_S
        for index, (proc, ready) in enumerate(waiting):
            while not ready.wait(0.2):
                if not proc.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    why = f"exited with status {proc.exitcode}" if not proc.is_alive() else \
                        f"did not listen within {READY_TIMEOUT_S} s"
                    raise ReadingRoomError(f"listener process {index + 1} of {self.count} {why}; see its error "
                                           "above (or in <home>/logs/readingroom.log)")
        log.info("%d listener processes on port %d (pids %s)", self.count, self.settings.dicom.port,
                 ", ".join(str(p.pid) for p in self._procs))

    def supervise(self, poll_s: float = 0.5) -> None:
        """Restart a process that dies, until ``stop``; ReadingRoomError when they keep dying at start."""
        while not self._stopping.wait(poll_s):
            for index, proc in enumerate(self._procs):
                if proc is None or proc.is_alive() or self._stopping.is_set():
                    continue
                lived = time.monotonic() - self._started[index]
                self._quick_deaths = self._quick_deaths + 1 if lived < RESTART_WINDOW_S else 0
                if self._quick_deaths >= MAX_QUICK_DEATHS:
                    self.stop()
                    raise ReadingRoomError(f"listener processes keep dying at start (the last: status "
                                           f"{proc.exitcode}); see the errors above")
                log.error("listener process %d (pid %d) died with status %s after %.0f s; starting another",
                          index + 1, proc.pid, proc.exitcode, lived)
                self._spawn(index)

    def request_stop(self) -> None:
        """Make ``supervise`` return (a signal handler may call it)."""
        self._stopping.set()

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs if proc is not None]

    def stop(self) -> None:
        """SIGTERM to every process, then SIGKILL to any still running after STOP_TIMEOUT_S."""
        self.request_stop()
        live = [proc for proc in self._procs if proc is not None and proc.is_alive()]
        for proc in live:
            proc.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("listener process pid %d did not stop within %d s; killing it", proc.pid, STOP_TIMEOUT_S)
                proc.kill()
                proc.join(5)


def run_listener_group(settings: Settings, overrides: dict[str, Any], db: Database) -> int:
    """``readingroom receive`` with ``dicom.processes`` above one: the clean-up and reconcile once,
    then the processes, supervised until SIGTERM or Ctrl-C."""
    from readingroom.jobs import open_queue
    from triage.service import IntakeService

    IntakeService(settings, db, open_queue(db, settings.jobs)).clean_up()
    db.dispose()     # the processes open their own connections
    group = ListenerGroup(settings, overrides)
    group.start()
    print(f"DICOM listener {settings.dicom.ae_title} on {settings.dicom.host}:{settings.dicom.port} "
          f"({group.count} processes); Ctrl-C to stop", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: group.request_stop())
    try:
        group.supervise()
    except KeyboardInterrupt:
        pass
    finally:
        group.stop()
    return 0
