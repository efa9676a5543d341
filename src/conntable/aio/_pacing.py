"""Pacing a mass expiry: how many entries each sweeper pass takes, from the loop lag the passes cause.

What a pass costs the loop is mostly not the pass. Closing a connection is
quick; what follows is not: the peer answers (a WebSocket close frame, a FIN),
``connection_lost`` runs, the handler's task ends. For a pass of ``n``
connections those ``n`` answers arrive together, a millisecond or so later,
and the loop handles them in one iteration: that iteration, not the pass, is
the stall a user sees. So the pacer does not time the pass's iteration (which
holds the answers to earlier passes, and made a controller that swung between
1 and 128 per pass, or collapsed to 1 when the loop had other work); it reads
the loop's *lag*: the sweeper pauses ``INTERVAL`` between passes and reports
how late it woke, the answers to its earlier passes included.

The controlled quantity is a rate (entries per second); a pass takes what the
rate allows for the time since the previous pass (up to one on-time pause:
a late loop must not grow the passes that made it late). Per report, on the
median of the last three lags (one late pause, the process waiting for a core
or a collection, is not this burst's doing; its own answers make every pause
late):

* lag at most ``TARGET_LAG / 2``: the rate grows by a quarter (slow start);
  up to ``TARGET_LAG``: by 1/16, approaching the limit gently;
* more: the rate shrinks in proportion (``TARGET_LAG / lag``, never below
  half at once), then holds for ``HOLD`` reports, which still show the
  answers to the passes before the cut: cutting again for them is the
  delayed-feedback oscillation the previous controller had. Fed answers up
  to two passes late, the pass size settles within +-15% of what the target
  allows (see the tests).

Bounds (the invariant): the rate never falls below ``MIN_RATE``, so a burst
always ends (10,000 connections within 5 s of being due however busy the loop
is; the old controller once left 1,106 open for 20 s), and at that floor a
pass adds at most ``MIN_RATE * per-entry cost`` of its own per second of lag
(0.2 at 100 µs per entry: the floor cannot feed its own lag). A single pass
takes at most ``PASS_BUDGET`` seconds at the measured cost per entry unless
the floor needs more (entries that cost over 250 µs each), at least one
entry, at most ``most``. Costs: a few float operations per pass;
deterministic (the clock readings are the caller's), so it is tested by
feeding it lags.

Trade-off: the lag it sees is the loop's, whatever caused it. A loop that
keeps lagging for reasons of its own (other traffic, a machine short of
cores) slows expiry down to the floor rate, never below.
"""

from __future__ import annotations

import math

__all__ = ("Pacer",)

#: The pause between passes of a burst (uvloop's timers count milliseconds).
INTERVAL = 0.002
#: The loop lag the pacing keeps below.
TARGET_LAG = 0.003
#: The most loop time one pass itself may take.
PASS_BUDGET = 0.002
#: The rate a burst starts at: its first pass takes ``FIRST`` entries.
FIRST = 16
START_RATE = FIRST / INTERVAL
#: The floor: expiry never runs slower than this many entries a second.
MIN_RATE = 2000.0
#: Reports after a cut during which the rate neither grows nor is cut again.
HOLD = 3
# The longest ``elapsed`` the controlled rate is applied to: a pause that ended on time.
_LONGEST = INTERVAL + TARGET_LAG
_GROW_FAST = 1.25
_GROW_SLOW = 1.0625
_MOST_CUT = 0.5
# The per-entry cost is smoothed over passes: one slow pass (a collection in it) does not halve the next.
_COST_WEIGHT = 0.25


class Pacer:
    """The size of each pass of one burst of expirations, and what it learns between them.

    ``most``: the largest pass (the sweeper's ``batch``). Call :meth:`restart`
    when a burst begins, :meth:`size` before each pass (``elapsed``: seconds
    since the previous pass began), and :meth:`report` after it.
    """

    __slots__ = ("most", "rate", "cost", "hold", "_lags", "lag", "cuts", "passes")

    def __init__(self, most: int) -> None:
        self.most = most
        #: Entries per second the burst is handed back at.
        self.rate = START_RATE
        #: Smoothed loop seconds one entry of a pass costs (0 until measured).
        self.cost = 0.0
        self.hold = 0
        self._lags = (0.0, 0.0)  # the two reports before the last
        #: The last lag reported (for tests and benchmarks).
        self.lag = 0.0
        #: Times the rate was cut, and passes sized, since the pacer was made (for tests and benchmarks).
        self.cuts = 0
        self.passes = 0

    def restart(self) -> None:
        """A new burst: start slow again (what the loop can take may have changed); the entry cost is kept."""
        self.rate = START_RATE
        self.hold = 0
        self._lags = (0.0, 0.0)

    def size(self, elapsed: float) -> int:
        """Entries for the next pass, ``elapsed`` seconds after the previous pass began (``math.inf``: the first)."""
        self.passes += 1
        if elapsed == math.inf:
            wanted = float(FIRST)
        else:
            # A late loop (a long ``elapsed``) does not grow the pass beyond what one
            # target-late pause allows: the lag may be this burst's own answers.
            wanted = self.rate * min(elapsed, _LONGEST)
            if self.cost > 0.0:
                wanted = min(wanted, PASS_BUDGET / self.cost)  # the pass's own stall
            wanted = max(wanted, MIN_RATE * elapsed)  # but never below the floor rate
        return max(1, min(self.most, int(wanted)))

    def report(self, entries: int, took: float, lag: float) -> None:
        """A pass handed back ``entries`` in ``took`` seconds; the pause after it ended ``lag`` seconds late."""
        self.lag = lag
        if entries > 0 and took >= 0.0:
            per_entry = took / entries
            self.cost = per_entry if self.cost == 0.0 else self.cost + _COST_WEIGHT * (per_entry - self.cost)
        # The median of the last three: one late pause (the process waited for a core, a
        # collection ran) is not this burst's doing; its own answers make every pause late.
        before, last = self._lags
        self._lags = (last, lag)
        lag = max(min(before, last), min(max(before, last), lag))
        if self.hold:
            self.hold -= 1
            return
        if lag > TARGET_LAG:
            self.rate = max(MIN_RATE, self.rate * max(_MOST_CUT, TARGET_LAG / lag))
            self.hold = HOLD
            self.cuts += 1
        else:
            self.rate *= _GROW_FAST if lag <= TARGET_LAG / 2 else _GROW_SLOW
            # Beyond what `most` passes back to back allow, growing further only stores up a cut.
            self.rate = min(self.rate, self.most / INTERVAL)
