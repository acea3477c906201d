"""The zero-copy frame buffer yields exactly what h2's own FrameBuffer yields."""

from __future__ import annotations

import h2.exceptions
import pytest
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from cwndproxy.http2.framebuffer import ZeroCopyFrameBuffer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def sample_frames() -> bytes:
    frames: list[Frame] = [SettingsFrame(0, settings={4: 1 << 24})]
    for i in range(1, 6):
        frames.append(DataFrame(2 * i - 1, data=bytes([i]) * (1000 * i), flags=["END_STREAM"]))
    padded = DataFrame(3, data=b"padded", flags=["PADDED"])
    padded.pad_length = 7
    frames.append(padded)
    frames.append(HeadersFrame(5, data=b"\x82\x86", flags=[]))
    frames.append(ContinuationFrame(5, data=b"\x84", flags=["END_HEADERS"]))
    frames.append(PingFrame(0, opaque_data=b"12345678"))
    frames.append(WindowUpdateFrame(0, window_increment=1000))
    return b"".join(f.serialize() for f in frames)


def drain(buffer: FrameBuffer, chunks: list[bytes]) -> list[str]:
    buffer.max_frame_size = 1 << 24
    out: list[str] = []
    for chunk in chunks:
        buffer.add_data(chunk)
        out.extend(repr(frame) + repr(getattr(frame, "data", b"")) for frame in buffer)
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0), max_size=40), st.booleans())
def test_same_frames_as_h2_for_any_read_boundaries(cuts: list[int], server: bool) -> None:
    data = (PREFACE if server else b"") + sample_frames()
    chunks = split(data, cuts)
    expected = drain(FrameBuffer(server=server), chunks)
    assert drain(ZeroCopyFrameBuffer(server=server), chunks) == expected
    assert len(expected) == 10  # the CONTINUATION is merged into its HEADERS


def test_bad_preface_and_oversized_frames_are_protocol_errors() -> None:
    with pytest.raises(h2.exceptions.ProtocolError):
        ZeroCopyFrameBuffer(server=True).add_data(b"GET / HTTP/1.1\r\n\r\n")
    buffer = ZeroCopyFrameBuffer()
    buffer.max_frame_size = 16384
    buffer.add_data(DataFrame(1, data=b"x" * 20000).serialize())
    with pytest.raises(h2.exceptions.FrameTooLargeError):
        list(buffer)


def test_mutable_input_is_copied() -> None:
    raw = bytearray(PingFrame(0, opaque_data=b"abcdefgh").serialize())
    buffer = ZeroCopyFrameBuffer()
    buffer.max_frame_size = 16384
    buffer.add_data(raw[:10])
    raw[:10] = b"\x00" * 10  # the caller reuses its buffer
    buffer.add_data(bytes(PingFrame(0, opaque_data=b"abcdefgh").serialize()[10:]))
    (frame,) = list(buffer)
    assert isinstance(frame, PingFrame) and frame.opaque_data == b"abcdefgh"
