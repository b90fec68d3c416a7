"""A screen update timer paced from the last frame, not from Textual's 60 fps grid.

Textual paints a screen from a paused interval timer that idle resumes when something is dirty.
After each frame that timer sleeps to the grid point *after next* (its skip arithmetic): the next
frame can start no sooner than 16.7-33 ms after the last one. A key pressed shortly after any
frame (a page that landed, a label, the previous key's frame) waited that long before its own
frame started; in a tmux bench, End after a re-sort waited 15-37 ms for it on top of ~10 ms of work.

:class:`FrameTimer` keeps the same cap (one frame per period) but measures it from the frame
before: a key after a quiet period paints at once, one within a period of the last frame waits
only for the rest of that period. :func:`frame_timer` makes one the way ``Screen`` makes its own.
:class:`IdleCollector` moves the garbage collector's young collections out of frames, into the pauses.
"""

from __future__ import annotations

import gc

from textual import _time
from textual.message_pump import MessagePump
from textual.timer import EventTargetGone, Timer, TimerCallback


class FrameTimer(Timer):
    """An interval timer whose next tick is due one interval after the previous tick, not on a grid."""

    async def _run(self) -> None:
        interval = self._interval
        last = float("-inf")
        while True:
            await self._active.wait()  # resumed (something to paint)
            wait = last + interval - _time.get_time()
            if wait > 0:
                await _time.sleep(wait)
                await self._active.wait()
            last = _time.get_time()
            try:
                await self._tick(next_timer=last, count=0)
            except EventTargetGone:
                break


def frame_timer(owner: MessagePump, interval: float, callback: TimerCallback, name: str) -> FrameTimer:
    """A started, paused :class:`FrameTimer` owned by ``owner`` (stopped with its other timers)."""
    timer = FrameTimer(owner, interval, name=name, callback=callback, pause=True)
    timer._start()
    owner._timers.add(timer)
    return timer


# Seconds without a frame before a young collection that is due runs. The collector runs when
# allocations cross its threshold, i.e. inside whatever is allocating: after `S` the new order's pages
# leave it nearly due and End's frame (38 new rows) tipped it, 3-25 ms of a 16 ms budget in most End
# frames (a tmux bench at a million users, loaded machine), once a 344 ms older-generation collection.
IDLE_COLLECT_AFTER = 0.1


class IdleCollector:
    """Runs the collection the interpreter would run soon, once frames have stopped for a moment.

    :meth:`after_frame` is called after each frame; when the young generation is at least half way to its
    threshold it arms a timer, and the timer collects (the oldest generation due, as the interpreter would
    pick it) if no frame came in the last :data:`IDLE_COLLECT_AFTER` seconds, else waits again. Nothing
    happens while the collector is disabled (the console's start-up).
    """

    def __init__(self, owner: MessagePump) -> None:
        self._owner = owner
        self._last_frame = 0.0
        self._timer: Timer | None = None

    def after_frame(self) -> None:
        self._last_frame = _time.get_time()
        if self._timer is None and gc.isenabled() and gc.get_count()[0] * 2 >= gc.get_threshold()[0]:
            self._timer = self._owner.set_timer(IDLE_COLLECT_AFTER, self._idle, name="idle-collect")

    def _idle(self) -> None:
        self._timer = None
        quiet = _time.get_time() - self._last_frame
        if quiet < IDLE_COLLECT_AFTER:
            self._timer = self._owner.set_timer(IDLE_COLLECT_AFTER - quiet, self._idle, name="idle-collect")
            return
        if not gc.isenabled():
            return
        counts, thresholds = gc.get_count(), gc.get_threshold()
        generation = next((g for g in (2, 1) if counts[g] >= thresholds[g]), 0)
        gc.collect(generation)
