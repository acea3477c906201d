"""The retry rule (like a careful nginx or Envoy): a failed attempt is tried again on
another session only while nothing has been sent to the client and the whole request body
is held in memory; and only for idempotent methods, or for any method when the upstream
proved it did not process the request (REFUSED_STREAM, or a stream above GOAWAY's
last_stream_id; RFC 9113 section 8.7)."""

from __future__ import annotations

# Attempts for a request the upstream proved it never processed (REFUSED_STREAM, above a
# GOAWAY's last_stream_id), at least; pools of more sessions allow one per session plus one.
# Pools recycle together: until the pool has learned the upstream's stream limit, nginx
# GOAWAYs every session after the same number of requests, so each retry can land on a
# session draining too, and the last one waits for a fresh session.
MAX_ATTEMPTS = 3


def should_retry(
    attempt: int,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    unprocessed: bool,
    idempotent: bool,
    response_started: bool,
    body_held: bool,
) -> bool:
    """Retry only while nothing went to the client and the whole body can be sent again;
    then up to ``max_attempts`` for a request the upstream never processed (any method,
    RFC 9113 section 8.7), and once for an idempotent one. A non-idempotent request that may have
    been processed is never replayed."""
    if response_started or not body_held:
        return False
    if unprocessed:
        return attempt < max_attempts - 1
    return idempotent and attempt == 0
