"""Ctrl-C during training: the first one asks the loop to stop at a safe point, the second
aborts; data-loading workers leave it to the main process."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


def ignore_sigint(_: int = 0) -> None:
    """``worker_init_fn`` of DataLoader workers: Ctrl-C reaches the whole process group and
    only the main process handles it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def stop_on_sigint(stop: threading.Event, on_first: Callable[[], None]) -> Iterator[None]:
    """While inside, a first SIGINT sets ``stop`` and calls ``on_first``; a second raises
    ``KeyboardInterrupt``. Does nothing outside the main thread (signals cannot be set there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        on_first()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
