"""The retry rule: when a failed attempt may be tried again on another session."""

from __future__ import annotations

from cwndproxy.proxy.retry import MAX_ATTEMPTS, should_retry


def test_retry_rule() -> None:
    def retry(attempt: int, **kw: bool) -> bool:
        base = {
            "unprocessed": False,
            "idempotent": True,
            "response_started": False,
            "body_held": True,
        }
        base.update(kw)
        return should_retry(attempt, **base)

    assert retry(0) and not retry(1)  # idempotent: once
    assert not retry(0, idempotent=False)  # a POST that may have been processed: never
    assert retry(0, idempotent=False, unprocessed=True)  # refused: safe for any method
    assert retry(MAX_ATTEMPTS - 2, unprocessed=True)
    assert not retry(MAX_ATTEMPTS - 1, unprocessed=True)
    assert not retry(0, response_started=True, unprocessed=True)
    assert not retry(0, body_held=False, unprocessed=True)
