"""State Manager's cron expressions for associations (ssm_lab/aws/cron.py), without a lab: what they accept and
refuse, and their next time in UTC. That the lab's scheduler fires them: test_lab_associations.py."""

import datetime as dt
import re

import pytest
from ssm_lab.aws import associations, cron
from ssm_lab.aws.ssmapi import ApiError

UTC = dt.timezone.utc
# Wednesday 2026-12-09 10:20:30 UTC
NOW = dt.datetime(2026, 12, 9, 10, 20, 30, tzinfo=UTC)


def at(*args):
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("expression, expected", [
    ("cron(0/30 * * * ? *)", at(2026, 12, 9, 10, 30)),        # every 30 minutes
    ("cron(0 0/1 * * ? *)", at(2026, 12, 9, 11, 0)),          # every hour
    ("cron(0 0/4 * * ? *)", at(2026, 12, 9, 12, 0)),          # every 4 hours: 0, 4, 8, 12, ...
    ("cron(15 13 ? * * *)", at(2026, 12, 9, 13, 15)),         # every day at 13:15
    ("cron(15 9 ? * * *)", at(2026, 12, 10, 9, 15)),          # today's time has passed: tomorrow
    ("cron(20 10 ? * * *)", at(2026, 12, 10, 10, 20)),        # this very minute has begun: tomorrow
    ("cron(15 13 ? * MON *)", at(2026, 12, 14, 13, 15)),      # every Monday
    ("cron(0 2 ? * SUN)", at(2026, 12, 13, 2, 0)),            # the year left out
    ("cron(0 0 2 ? * SUN *)", at(2026, 12, 13, 2, 0)),        # seconds 0 first
    ("cron(30 23 ? * TUE#3 *)", at(2026, 12, 15, 23, 30)),    # the third Tuesday
    ("cron(0 0 ? * THU#2 *)", at(2026, 12, 10, 0, 0)),        # the second Thursday
    ("cron(0 0 ? * 3L *)", at(2026, 12, 29, 0, 0)),           # the last Tuesday (3 is Tuesday: 1 is Sunday)
    ("cron(0 0 ? * FRIL *)", at(2026, 12, 25, 0, 0)),         # the last Friday
    ("cron(0 2 L * ? *)", at(2026, 12, 31, 2, 0)),            # the last day of the month
    ("cron(0 2 LW * ? *)", at(2026, 12, 31, 2, 0)),           # the last weekday (Thursday the 31st)
    ("cron(0 2 1W * ? *)", at(2027, 1, 1, 2, 0)),             # the weekday nearest the 1st (a Friday)
    ("cron(0 2 2W * ? *)", at(2027, 1, 1, 2, 0)),             # Saturday the 2nd: Friday the 1st
    ("cron(0 2 3W * ? *)", at(2027, 1, 4, 2, 0)),             # Sunday the 3rd: Monday the 4th
    ("cron(0 2 31 * ? *)", at(2026, 12, 31, 2, 0)),
    ("cron(0 2 30 * ? 2027)", at(2027, 1, 30, 2, 0)),         # the year field
    ("cron(0 8 ? * MON-FRI *)", at(2026, 12, 10, 8, 0)),
    ("cron(0 8,20 ? * SAT,SUN *)", at(2026, 12, 12, 8, 0)),
    ("cron(0 2 ? * SUN 2020)", None),                         # its years are over
])
def test_next_time_in_utc(expression, expected):
    assert cron.parse(expression).next_after(NOW) == expected


def test_next_time_of_a_moment_in_another_zone_is_in_utc():
    moment = NOW.astimezone(dt.timezone(dt.timedelta(hours=-8)))  # 02:20 the same day in UTC-8
    assert cron.parse("cron(15 13 ? * * *)").next_after(moment) == at(2026, 12, 9, 13, 15)


def test_the_weekday_nearest_never_leaves_the_month():
    # 2027-05-01 is a Saturday: 1W is Monday the 3rd, not April's last Friday; 2027-10-31 is a Sunday: the 29th
    assert cron.parse("cron(0 2 1W * ? *)").next_after(at(2027, 4, 30)) == at(2027, 5, 3, 2, 0)
    assert cron.parse("cron(0 2 31W * ? *)").next_after(at(2027, 10, 1)) == at(2027, 10, 29, 2, 0)


@pytest.mark.parametrize("expression, reason", [
    ("cron(0 2 ? *)", "it has 4 fields"),
    ("cron(0 0 2 ? * SUN * 1)", "it has 8 fields"),
    ("cron(30 0 2 ? * SUN *)", "seconds field is 30"),
    ("cron(0 2 ? JAN SUN *)", "does not support months"),
    ("cron(0 2 1 * SUN *)", "give ? in exactly one"),
    ("cron(0 2 ? * ? *)", "give ? in exactly one"),
    ("cron(0 2 * * * *)", "give ? in exactly one"),
    ("cron(0/15 * * * ? *)", "runs 15 minutes apart"),
    ("cron(* 2 ? * * *)", "runs 1 minutes apart"),
    ("cron(0 23 ? * * *)", None),
    ("cron(0,45 0,23 ? * * *)", "runs 15 minutes apart"),    # 23:45 then 00:00 the next day
    ("cron(60 2 ? * * *)", "60 is not a value of the minutes field"),
    ("cron(0 24 ? * * *)", "24 is not a value of the hours field"),
    ("cron(0 2 32 * ? *)", "32 is not a value of the day-of-month field"),
    ("cron(0 2 ? * FUN *)", "FUN is not a value of the day-of-week field"),
    ("cron(0 2 ? * TUE#6 *)", "the week of the month"),
    ("cron(0 2 ? * * 1969)", "1969 is not a value of the year field"),
    ("cron(0 5-2 ? * * *)", "ends before it starts"),
    ("cron(0 0/0 ? * * *)", "is not 1 or more"),
])
def test_what_an_association_refuses(expression, reason):
    if reason is None:
        cron.parse(expression)
        return
    with pytest.raises(cron.CronError, match=re.escape(reason)):
        cron.parse(expression)


def test_the_api_refuses_with_invalid_schedule():
    for expression in ("cron(0/15 * * * ? *)", "cron(0 2 ? JAN SUN *)", "every day", "rate(5 minutes)"):
        with pytest.raises(ApiError) as refused:
            associations.check_schedule(expression)
        assert refused.value.code == "InvalidSchedule"
        assert expression in str(refused.value)
    associations.check_schedule("cron(0 2 ? * SUN *)")
    associations.check_schedule("rate(30 minutes)")
