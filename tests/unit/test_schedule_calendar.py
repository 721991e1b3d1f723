"""Calendar expressions of `schedule`: parsed as systemd reads them, rendered for cron, and the
next run computed (for `schedule show` on cron hosts)."""

from __future__ import annotations

import runpy
from datetime import datetime

import pytest

from operations.schedule import choose_scheduler, cron_fields, next_run, parse_calendar
from tests.helpers import PROJECT_ROOT

DEFAULTS = runpy.run_path(str(PROJECT_ROOT / "group_data" / "all.py"))


def test_defaults_render_for_cron():
    rendered = {tier: cron_fields(parse_calendar(DEFAULTS[f"schedule_{tier}"]))
                for tier in ("daily", "weekly", "monthly", "quarterly")}
    assert rendered == {"daily": "0 6 * * *", "weekly": "0 7 * * 1", "monthly": "0 8 1 * *",
                        "quarterly": "0 9 1 1,4,7,10 *"}


@pytest.mark.parametrize(("expression", "cron"), [
    ("daily", "0 0 * * *"),
    ("weekly", "0 0 * * 1"),
    ("quarterly", "0 0 1 1,4,7,10 *"),
    ("Mon..Fri 07:30", "30 7 * * 1,2,3,4,5"),
    ("Sun,Sat *-*-* 05:15:00", "15 5 * * 0,6"),
    ("sunday 23:59", "59 23 * * 0"),
    ("*:0/15", "0,15,30,45 * * * *"),
    ("*-*-* 8..10:00", "0 8,9,10 * * *"),
    ("*-06-15", "0 0 15 6 *"),
    ("01-01 00:00", "0 0 1 1 *"),
    ("  *-*-*   06:00  ", "0 6 * * *"),
])
def test_cron_fields(expression, cron):
    assert cron_fields(parse_calendar(expression)) == cron


@pytest.mark.parametrize(("expression", "problem"), [
    ("", "empty"),
    ("every day", "weekday"),
    ("2027-01-01 06:00", "year"),
    ("*-*-* 06:00:30", "second"),
    ("*-*-* 25:00", "hour"),
    ("*-13-01", "month"),
    ("*-*-* 6h", "neither"),
    ("Fri..Mon 06:00", "backwards"),
    ("*-*-* 06:00 07:00", "neither"),
    ("*:0/0", "step"),
])
def test_bad_expressions_say_what_is_wrong(expression, problem):
    with pytest.raises(ValueError, match=problem):
        parse_calendar(expression)


def test_cron_refuses_weekday_and_day_of_month_together():
    calendar = parse_calendar("Mon *-*-01 06:00")  # systemd: a Monday that is the 1st
    with pytest.raises(ValueError, match="both a weekday and a day of the month"):
        cron_fields(calendar)


NOW = datetime(2026, 12, 4, 23, 27, 40)  # a Friday


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("*-*-* 06:00:00", NOW, datetime(2026, 12, 5, 6, 0)),
    ("Mon *-*-* 07:00:00", NOW, datetime(2026, 12, 7, 7, 0)),
    ("*-*-01 08:00:00", NOW, datetime(2027, 1, 1, 8, 0)),
    ("*-01,04,07,10-01 09:00:00", datetime(2027, 1, 1, 9, 0), datetime(2027, 4, 1, 9, 0)),
    ("*-*-* 06:00", datetime(2026, 12, 5, 5, 59, 59), datetime(2026, 12, 5, 6, 0)),
    ("*:0/15", NOW, datetime(2026, 12, 4, 23, 30)),
    ("*-02-29 00:00", NOW, datetime(2028, 2, 29, 0, 0)),
    ("*-*-31 12:00", datetime(2027, 2, 1), datetime(2027, 3, 31, 12, 0)),
])
def test_next_run_is_strictly_after(expression, after, expected):
    assert next_run(parse_calendar(expression), after) == expected


def test_next_run_of_an_impossible_date_is_none():
    assert next_run(parse_calendar("*-02-30 06:00"), NOW) is None


def test_scheduler_choice():
    assert choose_scheduler("auto", "systemd") == "systemd"
    assert choose_scheduler("auto", "sysv") == "cron"
    assert choose_scheduler("cron", "systemd") == "cron"
    assert choose_scheduler("systemd", "sysv") == "systemd"  # refused on the host, clearly
