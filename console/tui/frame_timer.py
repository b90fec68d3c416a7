"""A screen update timer paced from the last frame, not from Textual's 60 fps grid.

Textual paints a screen from a paused interval timer that idle resumes when something is dirty.
After each frame that timer sleeps to the grid point *after next* (its skip arithmetic): the next
frame can start no sooner than 16.7-33 ms after the last one. A key pressed shortly after any
frame (a page that landed, a label, the previous key's frame) waited that long before its own
frame started; in a tmux bench, End after a re-sort waited 15-37 ms for it on top of ~10 ms of work.

:class:`FrameTimer` keeps the same cap (one frame per period) but measures it from the frame
before: a key after a quiet period paints at once, one within a period of the last frame waits
only for the rest of that period. :func:`frame_timer` makes one the way ``Screen`` makes its own.
"""

from __future__ import annotations

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
