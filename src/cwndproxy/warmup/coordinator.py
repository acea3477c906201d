"""Warm-up across the pool: what one session's controller must know about the others.

- Real traffic anywhere in the pool is reported to every controller: ``auto`` pauses its
  grows and checks while any real transfer runs (they would share the bottleneck with it),
  ``burst`` shrinks its bursts to keep-alives. A controller hears of its own session and
  of the rest of the pool only when each goes from quiet to busy and back, and of a
  response that ended in the middle of its session's busy period only when what that
  response carried can tell about the window (``RealFlight``): its decisions read no
  more than that, and news of every stream was a wake-up of a controller per stream
  start and end (measured in a finely interleaved A/B: warm-up on cost a small request
  38-45% more of the event loop's CPU than a plain pool with that news, 15-22% without;
  docs/BENCHMARKS.md).
- One session grows its window at a time (the grow slot, first come first served), so a
  grow gets the whole path and reaches one path BDP instead of a share of it.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Protocol

from cwndproxy.upstream.counters import TrafficKind
from cwndproxy.upstream.session import H2Session, UpstreamStream
from cwndproxy.warmup import messages as m
from cwndproxy.warmup.policy import LOSSY_PATH_HOLD, MIN_RENEW_INTERVAL, Flight

# Shorter idle periods before a GOAWAY are not an idle timeout (a restart, a reload).
MIN_IDLE_TIMEOUT = 2.0


class Member(Protocol):
    """A controller as the coordinator sees it."""

    @property
    def session(self) -> H2Session: ...

    def post(self, event: m.Event) -> None: ...

    @property
    def flight_floor(self) -> float:
        """The fewest bytes a response must carry to give a verdict on the window."""


_STARTED_HERE = m.RealStarted(here=True)
_STARTED_ELSEWHERE = m.RealElsewhere(started=1)
_ENDED_ELSEWHERE = m.RealElsewhere(ended=1)


def flight_of(stream: UpstreamStream) -> Flight | None:
    if stream.flight_window is None or stream.bytes_received == 0:
        return None
    return Flight(stream.first_rtt_bytes, stream.bytes_received, tail_rate(stream))


def telling_flight(stream: UpstreamStream, floor: float) -> Flight | None:
    """The flight of a response, if it can tell a controller about the window: at least
    ``floor`` bytes (a verdict), or three RTTs long (a tail rate). Most responses are too
    small for either, and cost nothing more then."""
    if stream.bytes_received < floor and not _lasted_three_rtts(stream):
        return None
    return flight_of(stream)


def _lasted_three_rtts(stream: UpstreamStream) -> bool:
    # Shorter, and the response's end still carries its start.
    rtt, arrivals, first = stream.flight_window, stream.arrivals, stream.first_data_at
    return not (rtt is None or not arrivals or first is None or arrivals[-1][0] - first < 3 * rtt)


def tail_rate(stream: UpstreamStream) -> float | None:
    """Bits per second over the last two (minimum) RTTs of the response; None when it
    lasted less than three RTTs."""
    if not _lasted_three_rtts(stream):
        return None
    rtt, arrivals = stream.flight_window, stream.arrivals
    assert rtt is not None
    end, total = arrivals[-1]
    start = end - 2 * rtt
    before = None
    for at, so_far in arrivals:
        if at > start:
            break
        before = (at, so_far)
    if before is None:
        return None  # the ring does not reach back two RTTs (tiny frames): no verdict
    at, so_far = before
    return (total - so_far) * 8 / max(end - at, 1e-6)


class WarmupCoordinator:
    def __init__(self) -> None:
        self.members: list[Member] = []
        self._member_of: dict[int, Member] = {}  # id(session) -> its member
        self._real: collections.Counter[int] = collections.Counter()  # id(session) -> streams
        self._sessions: set[int] = set()
        self._grow_owner: Member | None = None
        self._grow_queue: collections.deque[Member] = collections.deque()
        # The upstream's idle timeout, once a session without streams got a GOAWAY.
        self.idle_timeout: float | None = None
        # Until when the pool keeps fresh connections rather than growing windows (each
        # renewal of a session whose window loss had cut starts it again); the last one.
        self.lossy_until = 0.0
        self._renewed_at = -math.inf

    # -- membership -------------------------------------------------------------------------
    def watch(self, session: H2Session) -> None:
        """Follow a session's real streams (once per session)."""
        if id(session) in self._sessions:
            return
        self._sessions.add(id(session))

        def on_stream(stream: UpstreamStream, opened: bool) -> None:
            self._on_stream(session, stream, opened)

        session.stream_listeners.append(on_stream)

    def add(self, member: Member) -> None:
        self.watch(member.session)
        self.members.append(member)
        self._member_of[id(member.session)] = member
        # Real streams already running: the newcomer must not grow beside them.
        own = self._real.get(id(member.session), 0)
        if own:
            member.post(_STARTED_HERE)
        if self.real_streams > own:
            member.post(_STARTED_ELSEWHERE)
        if self.idle_timeout is not None:
            member.post(m.IdleTimeoutLearned(self.idle_timeout))

    def session_ended(self, session: H2Session) -> None:
        """Learn the upstream's idle timeout from a GOAWAY to a connection that carried no
        stream: nginx sends one after keepalive_timeout (75 s) without streams, however
        many PINGs arrive, and the held window goes with the connection."""
        if session.goaway_last_stream_id is None or session.streams:
            return  # not the upstream's GOAWAY, or streams were still running
        idle = time.monotonic() - session.last_stream_at
        if idle < MIN_IDLE_TIMEOUT:
            return
        if self.idle_timeout is None or idle < self.idle_timeout:
            self.idle_timeout = idle
            for member in list(self.members):
                member.post(m.IdleTimeoutLearned(idle))

    def renew(self, member: Member, now: float) -> bool:
        """May ``member`` replace its session by a fresh connection (its window was cut by
        loss)? At most one renewal per MIN_RENEW_INTERVAL pool-wide, as each costs a
        handshake; each one tells every other member the path is lossy."""
        if now - self._renewed_at < MIN_RENEW_INTERVAL:
            return False
        self._renewed_at = now
        self.lossy_until = now + LOSSY_PATH_HOLD
        for other in list(self.members):
            if other is not member:
                other.post(m.PathLossy(self.lossy_until))
        return True

    def remove(self, member: Member) -> None:
        if member in self.members:
            self.members.remove(member)
        if self._member_of.get(id(member.session)) is member:
            del self._member_of[id(member.session)]
        self.release_grow(member)

    @property
    def real_streams(self) -> int:
        return sum(self._real.values())  # one entry per session with real streams

    def _on_stream(self, session: H2Session, stream: UpstreamStream, opened: bool) -> None:
        if stream.kind is not TrafficKind.REAL:
            return
        key = id(session)
        real = self._real
        if opened:
            real[key] += 1
        else:
            if real[key] <= 0:
                return  # opened before the session was watched: never counted, never told
            real[key] -= 1
            if real[key] <= 0:
                del real[key]
        # A session, or the rest of the pool seen from another session, went quiet -> busy
        # when it now has exactly this one stream, busy -> quiet when it has none.
        edge = 1 if opened else 0
        here = real.get(key, 0)
        if here > edge:
            # This session stays busy, so it crosses no edge, and neither does the rest of
            # the pool as any other member sees it (this session's streams are in it): only
            # a telling flight is news. Under load nearly every stream ends up here, O(1).
            own = self._member_of.get(key)
            if own is not None and not opened:
                flight = telling_flight(stream, own.flight_floor)
                if flight is not None:
                    own.post(m.RealFlight(flight))
            return
        total = self.real_streams
        for member in self.members:
            if member.session is not session:
                if total - real.get(id(member.session), 0) == edge:
                    # Coalesced in the member's inbox with the others since its last turn.
                    member.post(_STARTED_ELSEWHERE if opened else _ENDED_ELSEWHERE)
            else:
                member.post(_STARTED_HERE if opened else m.RealEnded(True, flight_of(stream)))

    # -- the grow slot ------------------------------------------------------------------------
    def request_grow(self, member: Member) -> None:
        if self._grow_owner is member or member in self._grow_queue:
            return
        if self._grow_owner is None:
            self._grow_owner = member
            member.post(m.GrowSlotGranted())
        else:
            self._grow_queue.append(member)

    def release_grow(self, member: Member) -> None:
        if member in self._grow_queue:
            self._grow_queue.remove(member)
        if self._grow_owner is not member:
            return
        self._grow_owner = None
        while self._grow_queue:
            nxt = self._grow_queue.popleft()
            if nxt in self.members:
                self._grow_owner = nxt
                nxt.post(m.GrowSlotGranted())
                return

    @property
    def grow_owner(self) -> Member | None:
        return self._grow_owner
