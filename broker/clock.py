"""The one clock every liveness and scheduling decision reads: Redis's own (TIME).

Heartbeats used to carry each worker's time.time(), judged against the clock of whichever
worker ran the scheduling round: a worker 10 s behind was dead at every round, one ahead
never died. Stamping and judging with the server's clock makes skew between machines
irrelevant (what remains is the network delay of one call, milliseconds)."""

from __future__ import annotations

import redis


def now(client: redis.Redis) -> float:
    """Seconds since the epoch, by the Redis server's clock."""
    seconds, micros = client.time()
    return seconds + micros / 1e6
