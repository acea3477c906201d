# ruff: noqa: E501 - real ss output lines are long
from __future__ import annotations

from cwndproxy.lab.testbed.observer import parse_ss

SS = (  # real ss output lines
    """\
0      376064    198.18.1.2:8080   198.18.1.1:54040
\t cubic wscale:10,10 rto:324 rtt:123.989/0.309 ato:40 mss:1448 pmtu:1500 rcvmss:536 advmss:1448 cwnd:1043 ssthresh:938 bytes_sent:100160777 bytes_retrans:105704 bytes_acked:99679009 bytes_received:262 segs_out:69177 send 97445031bps lastsnd:92 lastrcv:1304 pacing_rate 116.9Mbps delivery_rate 96519288bps delivered:68843 busy:8768ms unacked:260
ESTAB 0      0    198.18.1.2:8080   198.18.1.1:54042
\t cubic wscale:10,10 rto:280 rtt:80.5/1 mss:1448 cwnd:10 bytes_acked:1 lastsnd:3000
"""
)


def test_parse_ss_connections() -> None:
    first, second = parse_ss(SS, at=1.5)
    assert first.at == 1.5
    assert (first.local, first.peer) == ("198.18.1.2:8080", "198.18.1.1:54040")
    assert first.cc == "cubic" and first.cwnd == 1043 and first.ssthresh == 938
    assert first.rtt_ms == 123.989 and first.mss == 1448
    assert first.bytes_acked == 99679009 and first.send_q == 376064
    assert first.delivery_rate_bps == 96519288
    assert first.cwnd_bytes == 1043 * 1448
    assert first.lastsnd_ms == 92
    assert second.cwnd == 10 and second.ssthresh is None and second.delivery_rate_bps is None
