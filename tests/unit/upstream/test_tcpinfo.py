"""TCP_INFO offsets checked against a real loopback transfer."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from cwndproxy.upstream.tcpinfo import parse_tcp_info, read_field, read_tcp_info

SIZE = 4 * 1024 * 1024


def test_counters_move_with_a_real_transfer() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    got = bytearray()

    def drain() -> None:
        while len(got) < SIZE:
            chunk = peer.recv(1 << 20)
            if not chunk:
                break
            got.extend(chunk)

    before_tx = read_tcp_info(client)
    before_rx = read_tcp_info(peer)
    reader = threading.Thread(target=drain)
    reader.start()
    client.sendall(b"z" * SIZE)
    reader.join(timeout=30)
    # The final ACKs may trail the last recv by a moment.
    deadline = time.monotonic() + 5
    while read_tcp_info(client).unacked and time.monotonic() < deadline:
        time.sleep(0.01)
    tx = read_tcp_info(client)
    rx = read_tcp_info(peer)
    try:
        assert len(got) == SIZE
        assert tx.state == 1  # TCP_ESTABLISHED
        assert before_tx.bytes_acked is not None and tx.bytes_acked is not None
        assert tx.bytes_acked - before_tx.bytes_acked == SIZE
        assert tx.bytes_sent is not None and tx.bytes_sent >= SIZE
        assert before_rx.bytes_received is not None and rx.bytes_received is not None
        assert rx.bytes_received - before_rx.bytes_received == SIZE
        # Plausibility of the fields whose offsets matter most to the warm-up engine.
        assert tx.snd_mss > 500 and tx.snd_cwnd >= 10
        assert tx.cwnd_bytes == tx.snd_cwnd * tx.snd_mss
        assert 0 < tx.rtt_us < 1_000_000
        assert tx.rto_us >= 200_000  # Linux's minimum RTO
        assert tx.delivery_rate is not None and tx.delivery_rate > 0
        assert rx.rcv_space > 0
        # Nothing lost on loopback, though now and then a few segments arrive out of order
        # (4 packets in one of 14 runs here); its neighbour, snd_wnd, would read >= 64 KiB.
        assert rx.rcv_ooopack is not None and rx.rcv_ooopack < 1000
        assert read_field(peer, "rcv_ooopack") == rx.rcv_ooopack
    finally:
        for s in (client, peer, server):
            s.close()


def test_short_struct_leaves_newer_fields_unset() -> None:
    info = parse_tcp_info(bytes(104))
    assert info.snd_cwnd == 0
    assert info.pacing_rate is None and info.bytes_sent is None


def test_closed_socket_raises_oserror() -> None:
    sock = socket.socket()
    sock.close()
    with pytest.raises(OSError):
        read_tcp_info(sock)
