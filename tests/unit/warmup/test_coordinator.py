"""The pool's news for each warm-up controller: its own session and the rest of the pool
only as quiet -> busy and busy -> quiet, and a response in the middle of its session's busy
period only when it can tell about the window."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.upstream.counters import TrafficKind
from cwndproxy.upstream.session import H2Session, UpstreamStream
from cwndproxy.warmup import messages as m
from cwndproxy.warmup.coordinator import WarmupCoordinator
from cwndproxy.warmup.policy import Flight


class StubSession:
    """What the coordinator touches of a session: its stream listeners."""

    def __init__(self) -> None:
        self.stream_listeners: list[Callable[[UpstreamStream, bool], None]] = []

    def stream(
        self, opened: bool, kind: TrafficKind = TrafficKind.REAL, stream: StubStream | None = None
    ) -> None:
        stream = stream or StubStream(kind)
        for listener in self.stream_listeners:
            listener(cast(UpstreamStream, stream), opened)


class StubStream:
    """What a flight is made of; by default a stream that carried nothing."""

    def __init__(
        self, kind: TrafficKind = TrafficKind.REAL, received: int = 0, lasted_rtts: float = 0.0
    ) -> None:
        self.kind = kind
        self.flight_window: float | None = RTT if received else None
        self.bytes_received = received
        self.first_rtt_bytes = min(received, FLOOR)
        self.first_data_at: float | None = 10.0 if received else None
        # (time, bytes so far): evenly spread over the response's length.
        steps = 20
        self.arrivals = [
            (10.0 + lasted_rtts * RTT * i / steps, received * i // steps)
            for i in range(1, steps + 1)
        ]


RTT = 0.05
FLOOR = 100_000


class Recorder:
    def __init__(self, session: StubSession) -> None:
        self._session = session
        self.posts: list[m.Event] = []

    @property
    def session(self) -> H2Session:
        return cast(H2Session, self._session)

    @property
    def flight_floor(self) -> float:
        return FLOOR

    def post(self, event: m.Event) -> None:
        self.posts.append(event)

    def busy_elsewhere(self) -> int:
        """The news from elsewhere, added up: 1 while the rest of the pool is busy."""
        total = 0
        for e in self.posts:
            if isinstance(e, m.RealElsewhere):
                total += e.started - e.ended
        return total

    def here(self) -> int:
        """The news of its own session, added up: 1 while it has real streams."""
        starts = sum(isinstance(e, m.RealStarted) and e.here for e in self.posts)
        return starts - sum(isinstance(e, m.RealEnded) and e.here for e in self.posts)


def test_overlapping_streams_elsewhere_are_one_busy_period() -> None:
    coord = WarmupCoordinator()
    a, b = StubSession(), StubSession()
    ma, mb = Recorder(a), Recorder(b)
    coord.add(ma)
    coord.add(mb)
    for _ in range(3):
        a.stream(True)
    b.stream(True)
    a.stream(True, TrafficKind.DUMMY)  # dummy streams are not real traffic
    for _ in range(3):
        a.stream(False)
    assert mb.posts == [
        m.RealElsewhere(started=1),
        m.RealStarted(here=True),
        m.RealElsewhere(ended=1),
    ]
    assert ma.posts == [m.RealStarted(here=True), m.RealElsewhere(started=1), m.RealEnded(True)]
    assert ma.here() == 0
    assert ma.busy_elsewhere() == 1, "b's stream still runs"
    b.stream(False)
    assert ma.posts[-1] == m.RealElsewhere(ended=1)
    assert coord.real_streams == 0


# (session index, opened?) steps; closes of a session without streams are skipped.
_STEPS = st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=60)


@given(_STEPS, st.integers(0, 60))
def test_each_member_knows_its_own_streams_and_whether_the_rest_is_busy(
    steps: list[tuple[int, bool]], join_at: int
) -> None:
    coord = WarmupCoordinator()
    sessions = [StubSession() for _ in range(3)]
    for session in sessions:  # the pool watches every session, member or not
        coord.watch(cast(H2Session, session))
    members = [Recorder(s) for s in sessions[:2]]
    for member in members:
        coord.add(member)
    open_streams = [0, 0, 0]
    for index, (which, opened) in enumerate(steps):
        if index == join_at:  # a member joins while streams run
            late = Recorder(sessions[2])
            coord.add(late)
            members.append(late)
        if not opened and not open_streams[which]:
            continue
        sessions[which].stream(opened)
        open_streams[which] += 1 if opened else -1
        for member, own in zip(members, open_streams, strict=False):
            assert member.here() == (own > 0)
            assert member.busy_elsewhere() == (sum(open_streams) > own)
    for member in members:
        # Alternating: never two starts (or two ends) in a row, here or elsewhere.
        elsewhere = [e for e in member.posts if isinstance(e, m.RealElsewhere)]
        assert all(x != y for x, y in itertools.pairwise(elsewhere))
        here = [type(e) for e in member.posts if isinstance(e, m.RealStarted | m.RealEnded)]
        assert all(x is not y for x, y in itertools.pairwise(here))
        assert not any(isinstance(e, m.RealFlight) for e in member.posts), "no flight to tell"


def test_a_response_ending_mid_busy_is_news_only_if_it_can_tell_about_the_window() -> None:
    coord = WarmupCoordinator()
    a = StubSession()
    ma = Recorder(a)
    coord.add(ma)
    a.stream(True)  # keeps the session busy throughout
    small = StubStream(received=FLOOR - 1, lasted_rtts=2.0)
    large = StubStream(received=FLOOR)
    long = StubStream(received=FLOOR // 10, lasted_rtts=4.0)
    for stream in (small, large, long):
        a.stream(True, stream=stream)
        a.stream(False, stream=stream)
    assert [type(e) for e in ma.posts] == [m.RealStarted, m.RealFlight, m.RealFlight]
    flights = [e.flight for e in ma.posts if isinstance(e, m.RealFlight)]
    assert flights[0].total_bytes == FLOOR and flights[0].tail_bps is None
    assert flights[1].total_bytes == FLOOR // 10 and flights[1].tail_bps is not None
    # The busy period's end carries its last response's flight, however small.
    a.stream(True, stream=small)
    a.stream(False)
    a.stream(False, stream=small)
    assert ma.posts[-1] == m.RealEnded(True, flight=Flight(small.first_rtt_bytes, FLOOR - 1, None))


def test_a_stream_from_before_the_watch_is_not_counted_at_its_end() -> None:
    coord = WarmupCoordinator()
    a, b = StubSession(), StubSession()
    stream = StubStream(TrafficKind.REAL)
    coord.watch(cast(H2Session, a))
    mb = Recorder(b)
    coord.add(mb)
    for listener in a.stream_listeners:  # ends, though its start was never seen
        listener(cast(UpstreamStream, stream), False)
    assert coord.real_streams == 0 and mb.posts == []
    a.stream(True)
    assert coord.real_streams == 1 and mb.busy_elsewhere() == 1


def test_renewals_are_one_a_second_pool_wide_and_tell_the_others_the_path_is_lossy() -> None:
    coord = WarmupCoordinator()
    a, b, c = Recorder(StubSession()), Recorder(StubSession()), Recorder(StubSession())
    for member in (a, b, c):
        coord.add(member)
    assert coord.renew(a, now=100.0)
    assert coord.lossy_until == 160.0
    assert a.posts == [] and b.posts == c.posts == [m.PathLossy(until=160.0)]
    # Each renewal costs a handshake: not two in the same second, whoever asks.
    assert not coord.renew(b, now=100.5)
    assert coord.renew(b, now=101.0)
    assert a.posts == c.posts[1:] == [m.PathLossy(until=161.0)]
