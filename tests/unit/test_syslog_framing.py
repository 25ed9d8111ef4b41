"""RFC 6587 framing of a TCP stream, with Flume's eventSize cut."""

from __future__ import annotations

from flumed.sources.syslog_parser import SyslogFramer


def feed_all(framer: SyslogFramer, chunks: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(messages, the ones flagged cut), over all chunks and the close."""
    msgs: list[bytes] = []
    cut: list[bytes] = []
    for c in [*chunks, None]:
        lines, idx = framer.feed(c) if c is not None else framer.close()
        msgs += lines
        cut += [lines[i] for i in idx]
    return msgs, cut


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def test_newline_framing_any_chunking() -> None:
    data = b"<1>a\n\n<2>bb\r\n<3>ccc\n<4>tail"
    want = [b"<1>a", b"<2>bb", b"<3>ccc", b"<4>tail"]
    assert feed_all(SyslogFramer(100), [data]) == (want, [])
    assert feed_all(SyslogFramer(100), bytewise(data)) == (want, [])
    assert feed_all(SyslogFramer(100), [data[:7], data[7:13], data[13:]]) == (want, [])


def test_newline_event_size_cut() -> None:
    # Longer than eventSize: full pieces flagged, the remainder is the next message.
    data = b"0123456789" * 2 + b"01234\n" + b"x" * 10 + b"\n<1>ok\n"
    for chunks in ([data], bytewise(data)):
        msgs, cut = feed_all(SyslogFramer(10), chunks)
        assert msgs == [b"0123456789", b"0123456789", b"01234", b"x" * 10, b"<1>ok"]
        assert cut == [b"0123456789", b"0123456789"]


def test_unterminated_long_line_is_cut_while_it_streams() -> None:
    f = SyslogFramer(10)
    lines, idx = f.feed(b"y" * 35)
    assert lines == [b"y" * 10] * 3 and idx == [0, 1, 2]
    assert len(f.rest) == 5
    assert f.close() == ([b"y" * 5], [])


def test_octet_counting_any_chunking() -> None:
    frames = [b"<1>one", b"<2>multi\nline", b"<3>x" * 3]
    data = b"".join(b"%d %s" % (len(m), m) for m in frames)
    assert feed_all(SyslogFramer(100), [data]) == (frames, [])
    assert feed_all(SyslogFramer(100), bytewise(data)) == (frames, [])


def test_octet_counting_oversized_frame() -> None:
    big = b"<9>" + b"z" * 24  # 27 bytes, eventSize 10
    data = b"%d %s" % (len(big), big) + b"6 <1>end"
    for chunks in ([data], bytewise(data)):
        msgs, cut = feed_all(SyslogFramer(10), chunks)
        assert msgs == [big[:10], big[10:20], big[20:], b"<1>end"]
        assert cut == [big[:10], big[10:20]]


def test_octet_counting_falls_back_to_newlines() -> None:
    data = b"5 <1>ab\n<2>plain\n<3>more\n"
    assert feed_all(SyslogFramer(100), [data]) == ([b"<1>ab", b"<2>plain", b"<3>more"], [])
    # Not a length at all: newline framing from there on.
    data = b"12345678901234 x\n"
    assert feed_all(SyslogFramer(100), [data]) == ([b"12345678901234 x"], [])


def test_truncated_octet_frame_at_close_is_flagged() -> None:
    msgs, cut = feed_all(SyslogFramer(100), [b"20 <1>only-part"])
    assert msgs == [b"<1>only-part"] and cut == msgs


def test_octet_frames_drop_one_trailing_newline() -> None:
    # rsyslog's forwarding templates end with LF, counted in the frame length.
    frames = [b"<1>one\n", b"<2>two\r\n", b"<3>three"]
    data = b"".join(b"%d %s" % (len(m), m) for m in frames)
    assert feed_all(SyslogFramer(100), bytewise(data)) == ([b"<1>one", b"<2>two", b"<3>three"], [])
