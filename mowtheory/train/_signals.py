"""SIGTERM and SIGINT during training: finish the current step, checkpoint, say where, exit.

:class:`StopSignals` installs handlers (main thread only) that only record the signal; the
training loop checks :attr:`StopSignals.signum` after each step, writes a checkpoint and
raises :class:`Interrupted`, which the CLI turns into one line and exit status ``128 +
signum`` (143 for SIGTERM, 130 for SIGINT). A second signal while that happens restores the
previous handler and re-delivers itself (the process ends as it would have without us).
"""
from __future__ import annotations

import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """Training stopped by a signal after writing the checkpoint of ``step`` to ``path``
    (None when nothing could be written). ``exit_status`` is ``128 + signum``."""

    def __init__(self, message: str, *, signum: int, step: int, path):
        super().__init__(message)
        self.signum, self.step, self.path = signum, step, path
        self.exit_status = 128 + signum


class StopSignals:
    """``with StopSignals() as stop: ... if stop.signum: ...``; a no-op outside the main
    thread or with ``enabled=False``."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum = None
        self._old = {}

    def _handler(self, signum, frame) -> None:
        if self.signum is not None:            # second signal: give up waiting for the step
            self._restore()
            os.kill(os.getpid(), signum)
            return
        self.signum = signum

    def _restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def __enter__(self) -> "StopSignals":
        if self.enabled:
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()
