"""Sending a large value to Redis from its own buffer.

With hiredis installed, redis-py turns a bytearray or memoryview argument into bytes and
then packs the whole command into one new buffer: two copies of the value before it reaches
the socket, about 20 ms for a 45 MB model here (benchmarks/weight_store.py). A SET is a
fixed frame around the value, so it is written here, and the value is handed to
sendall() as it is.
"""

from __future__ import annotations

def set_buffer(client, key: str, data, px: int | None = None, then: tuple | None = None):
    """SET key data [PX px], without copying data (any object with the buffer protocol).

    then: another command (its arguments) sent in the same write, so that both cost one
    round trip; its reply is returned (an error reply raises, as redis-py would)."""
    view = memoryview(data).cast("B")
    name = key.encode()
    head = b"*%d\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n" % (3 if px is None else 5, len(name), name, view.nbytes)
    if px is None:
        tail = b"\r\n"
    else:
        ttl = str(int(px)).encode()
        tail = b"\r\n$2\r\nPX\r\n$%d\r\n%s\r\n" % (len(ttl), ttl)
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([head, view, tail] + (conn.pack_command(*then) if then else []))
        conn.read_response()  # OK (an error reply raises)
        return conn.read_response() if then else None
    except BaseException:
        conn.disconnect()  # a reply may be left unread: never reuse this connection
        raise
    finally:
        pool.release(conn)
