"""Reading WebSocket frames without a Future per read when the bytes are already buffered.

Tornado's protocol 13 reads every frame in two to four ``IOStream.read_bytes`` calls (header,
length, mask, payload), each one a Future, an inline-read attempt and a buffer search, even
when one ``recv`` already brought the whole frame (and often the next ones). Here a read that
the stream's buffer can satisfy takes the bytes at once; anything else (an empty or short
buffer, a read already pending, a closed stream) goes Tornado's way. Same bytes, same order,
same errors.
"""

from __future__ import annotations

import tornado.iostream
import tornado.websocket

# The IOStream internals the fast path reads (Tornado 6.x); without any of them it is off.
_STREAM_FIELDS = ("_read_buffer_size", "_read_future", "_user_read_buffer", "_consume", "_closed")


class BufferedReadProtocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol 13, with reads served from the stream's buffer when it holds them."""

    _fast_reads: bool | None = None

    async def _read_bytes(self, n: int) -> bytes:
        stream = self.stream
        if self._fast_reads is None:
            self._fast_reads = isinstance(stream, tornado.iostream.IOStream) and all(
                hasattr(stream, f) for f in _STREAM_FIELDS)
        if (self._fast_reads and stream._read_buffer_size >= n and stream._read_future is None
                and not stream._user_read_buffer and not stream._closed):
            data = stream._consume(n)
            self._wire_bytes_in += n
            return data
        return await super()._read_bytes(n)
