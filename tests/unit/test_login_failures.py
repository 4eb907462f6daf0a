"""The failed-login ledger on its own: throttle windows, one row per source per minute,
nothing lost, bounded table."""

from __future__ import annotations

from gpuplane.service.login_failures import AUDIT_EVERY_S, OVERFLOW, FailedLogins, source_key


def test_throttle_opens_after_limit_and_closes_with_the_window():
    led = FailedLogins(limit=3, window_s=60)
    for t in (0, 1, 2):
        assert led.check("a", t) == (None, None)
        led.failed("a", "unknown token", None, t)
    wait, _ = led.check("a", 10)
    assert wait == 50
    assert led.check("b", 10) == (None, None)  # other sources are not affected
    assert led.check("a", 60)[0] is None  # the window opened at t=0 has ended
    led.failed("a", "unknown token", None, 60)
    assert led.check("a", 61)[0] is None  # a fresh window with one failure


def test_at_most_one_row_per_source_per_minute_and_every_attempt_counted():
    led = FailedLogins(limit=10, window_s=60)
    rows, t, n = [], 0.0, 0
    while t < 600:
        wait, row = led.check("a", t)
        rows += [row] if row else []
        if wait is None:
            row = led.failed("a", "unknown token", None, t)
            rows += [row] if row else []
        n += 1
        if n % 7 == 0:
            rows += led.due(t)
        t += 0.25
    ats = [r.detail["window_end"] for r in rows]
    assert len(rows) <= 600 / AUDIT_EVERY_S + 1
    rows += led.drain()
    assert sum(r.detail["count"] for r in rows) == n
    assert led.pending() == 0
    assert all(b - a >= AUDIT_EVERY_S - 0.25 for a, b in zip(ats, ats[1:], strict=False))
    assert {k for r in rows for k in r.detail["reasons"]} == {"unknown token", "throttled"}


def test_first_failure_after_a_quiet_minute_is_written_at_once():
    led = FailedLogins()
    assert led.failed("a", "unknown token", None, 0).detail["count"] == 1
    assert led.failed("a", "unknown token", None, 30) is None
    row = led.failed("a", "revoked token", "bob", 61)
    assert row.detail["count"] == 2 and row.detail["users"] == ["bob"]
    assert row.detail["window_start"] == 30 and row.detail["window_end"] == 61


def test_restore_keeps_counts_of_a_row_that_could_not_be_written():
    led = FailedLogins()
    row = led.failed("a", "unknown token", None, 0)
    led.restore(row)
    again = led.failed("a", "unknown token", None, 1)
    assert again is not None and again.detail["count"] == 2


def test_the_table_is_bounded():
    led = FailedLogins(limit=1, window_s=60, max_sources=2)
    led.failed("a", "unknown token", None, 0)
    led.failed("b", "unknown token", None, 0)
    led.failed("c", "unknown token", None, 0)
    led.failed("d", "unknown token", None, 0)
    assert led.check("c", 1) == (None, None)  # the overflow entry is never throttled
    assert led.check("a", 1)[0] is not None
    assert {r.source for r in led.drain()} <= {"a", "b", OVERFLOW}
    # quiet entries are evicted, so new sources get their own entry again
    assert led.failed("e", "unknown token", None, 200).source == "e"


def test_source_keys():
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key(None) == "unknown"
