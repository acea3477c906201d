"""A warm-up controller's inbox: events in order, the pool's news of other sessions'
streams summed into the one RealElsewhere that waits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cwndproxy.warmup import messages as m
from cwndproxy.warmup.controller import Inbox


async def test_news_from_elsewhere_waits_as_one_sum_in_its_place() -> None:
    inbox = Inbox()
    inbox.post(m.RealElsewhere(started=1))
    inbox.post(m.RealStarted(here=True))
    inbox.post(m.RealElsewhere(ended=1))
    inbox.post(m.RealElsewhere(started=1))
    assert inbox.get_nowait() == m.RealElsewhere(started=2, ended=1)
    assert await inbox.get() == m.RealStarted(here=True)
    assert inbox.empty()
    # Taken: the next news is queued anew, behind what came before it.
    inbox.post(m.TimerFired())
    inbox.post(m.RealElsewhere(ended=1))
    assert inbox.get_nowait() == m.TimerFired()
    assert inbox.get_nowait() == m.RealElsewhere(ended=1)
    assert inbox.empty()


_POSTS = st.lists(
    st.sampled_from(
        [m.RealElsewhere(started=1), m.RealElsewhere(ended=1), m.TimerFired(), m.GrowSlotGranted()]
    ),
    max_size=30,
)


@given(_POSTS, st.lists(st.integers(min_value=0, max_value=5), max_size=10))
def test_nothing_is_lost_and_the_rest_keeps_its_order(
    posts: list[m.Event], takes_between: list[int]
) -> None:
    """Whatever the interleaving of posts and takes: the same other events in the same
    order, and the same totals of streams started and ended elsewhere."""
    inbox = Inbox()
    taken: list[m.Event] = []
    cuts = iter(takes_between)
    for index, event in enumerate(posts):
        inbox.post(event)
        if index % 3 == 2:
            for _ in range(next(cuts, 0)):
                if not inbox.empty():
                    taken.append(inbox.get_nowait())
    while not inbox.empty():
        taken.append(inbox.get_nowait())
    others = [e for e in taken if type(e) is not m.RealElsewhere]
    assert others == [e for e in posts if type(e) is not m.RealElsewhere]
    posted = [e for e in posts if isinstance(e, m.RealElsewhere)]
    sums = [e for e in taken if isinstance(e, m.RealElsewhere)]
    assert sum(e.started for e in sums) == sum(e.started for e in posted)
    assert sum(e.ended for e in sums) == sum(e.ended for e in posted)
    assert len(sums) <= len(posted)
