"""State Manager's cron expressions for associations: parse one as AWS accepts it, and find its next time in UTC.

The format (AWS Systems Manager User Guide, "Reference: Cron and rate expressions for Systems Manager"):
``cron([Seconds] Minutes Hours Day-of-month Month Day-of-week [Year])``. Seconds, when given, can only be 0; the
year (1970-2199) may be left out, which means every year. Minutes 0-59 and hours 0-23 take ``, - * /``;
day-of-month 1-31 takes those and ``?``, ``L`` (the last day) and ``W`` (``15W``: the weekday nearest the 15th,
``LW``: the last weekday); day-of-week 1-7 or SUN-SAT (1 is Sunday) takes those and ``?``, ``L`` (``3L``, ``TUEL``:
the last Tuesday of the month) and ``#`` (``TUE#3``: the third Tuesday). What associations refuse: a month other
than ``*`` (State Manager does not support months), a value in both day-of-month and day-of-week (one of them is
``?``), and times closer than 30 minutes apart (the shortest schedule an association takes).
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re

MIN_INTERVAL_MINUTES = 30
YEARS = (1970, 2199)
DAY_NAMES = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)}
MONTH_NAMES = {name.upper(): number for number, name in enumerate(calendar.month_abbr) if name}
_ITEM = re.compile(r"^(?P<range>\*|[0-9A-Z]+(?:-[0-9A-Z]+)?)(?:/(?P<step>[0-9]+))?$")


class CronError(ValueError):
    """An expression State Manager does not accept for an association; the message says why."""


class Cron:
    """A parsed association cron expression; ``next_after(moment)`` gives its next time strictly after ``moment``."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        if not (expression.startswith("cron(") and expression.endswith(")")):
            raise CronError("it is not cron(...)")
        fields = expression[5:-1].split()
        if len(fields) == 7:
            if fields[0] != "0":
                raise CronError(f"the seconds field is {fields[0]}; an association's seconds can only be 0")
            fields = fields[1:]
        if len(fields) == 5:
            fields.append("*")
        if len(fields) != 6:
            raise CronError(f"it has {len(expression[5:-1].split())} fields; an association's cron has "
                            "Minutes Hours Day-of-month Month Day-of-week Year, and an optional Seconds (0) first")
        minutes, hours, dom, month, dow, year = (f.upper() for f in fields)
        self.minutes = _values(minutes, 0, 59, "minutes")
        self.hours = _values(hours, 0, 23, "hours")
        if month not in ("*", "?"):
            raise CronError(f"the month field is {month}; State Manager does not support months in an association's "
                            "cron: use *")
        self.years = _values(year, YEARS[0], YEARS[1], "year")
        if (dom == "?") == (dow == "?"):
            raise CronError("give ? in exactly one of day-of-month and day-of-week")
        self.dom = None if dom == "?" else _day_of_month(dom)
        self.dow = None if dow == "?" else _day_of_week(dow)
        self.times = sorted(h * 60 + m for h in self.hours for m in self.minutes)
        gaps = [b - a for a, b in zip(self.times, self.times[1:])] + [self.times[0] + 1440 - self.times[-1]]
        if len(self.times) > 1 and min(gaps) < MIN_INTERVAL_MINUTES:
            raise CronError(f"it runs {min(gaps)} minutes apart; an association runs at most every "
                            f"{MIN_INTERVAL_MINUTES} minutes")

    def runs_on(self, day: _dt.date) -> bool:
        if day.year not in self.years:
            return False
        last = calendar.monthrange(day.year, day.month)[1]
        if self.dom is not None:
            return any(rule(day, last) for rule in self.dom)
        return any(rule(day, last) for rule in self.dow)

    def next_after(self, moment: _dt.datetime) -> _dt.datetime | None:
        """The first time after ``moment`` (an aware datetime) at which the expression fires, in UTC; None if it
        never fires again (its years are over)."""
        moment = moment.astimezone(_dt.timezone.utc)
        day = moment.date()
        while day.year <= max(self.years):
            if day.year not in self.years:
                day = _dt.date(day.year + 1, 1, 1)
                continue
            if self.runs_on(day):
                for minute in self.times:
                    start = _dt.datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=_dt.timezone.utc)
                    if start > moment:
                        return start
            day += _dt.timedelta(days=1)
        return None


def _number(token: str, low: int, high: int, names: dict | None, field: str) -> int:
    if names and token in names:
        return names[token]
    if not token.isdigit() or not low <= int(token) <= high:
        raise CronError(f"{token} is not a value of the {field} field ({low}-{high})")
    return int(token)


def _values(text: str, low: int, high: int, field: str, names: dict | None = None) -> set[int]:
    """The values a field of ``, - * /`` items selects."""
    chosen: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if not match:
            raise CronError(f"{item} is not a value of the {field} field")
        spec, step = match.group("range"), match.group("step")
        if spec == "*":
            first, last = low, high
        elif "-" in spec:
            first, last = (_number(t, low, high, names, field) for t in spec.split("-"))
            if first > last:
                raise CronError(f"the range {spec} of the {field} field ends before it starts")
        else:
            first = _number(spec, low, high, names, field)
            last = high if step else first
        if step is not None and int(step) < 1:
            raise CronError(f"the step {step} of the {field} field is not 1 or more")
        chosen.update(range(first, last + 1, int(step or 1)))
    return chosen


def _nearest_weekday(day: _dt.date, last: int) -> _dt.date:
    """The weekday nearest ``day`` within its month (W): Saturday moves to Friday, Sunday to Monday."""
    if day.weekday() == 5:
        return day - _dt.timedelta(days=1) if day.day > 1 else day + _dt.timedelta(days=2)
    if day.weekday() == 6:
        return day + _dt.timedelta(days=1) if day.day < last else day - _dt.timedelta(days=2)
    return day


def _day_of_month(text: str) -> list:
    rules = []
    for item in text.split(","):
        if item == "L":
            rules.append(lambda day, last: day.day == last)
        elif item == "LW":
            rules.append(lambda day, last: day == _nearest_weekday(day.replace(day=last), last))
        elif item.endswith("W"):
            wanted = _number(item[:-1], 1, 31, None, "day-of-month")
            rules.append(lambda day, last, wanted=wanted: wanted <= last
                         and day == _nearest_weekday(day.replace(day=wanted), last))
        else:
            days = _values(item, 1, 31, "day-of-month")
            rules.append(lambda day, last, days=days: day.day in days)
    return rules


def _weekday(day: _dt.date) -> int:
    """AWS's day-of-week number: 1 is Sunday, 7 Saturday."""
    return (day.weekday() + 1) % 7 + 1


def _day_of_week(text: str) -> list:
    rules = []
    for item in text.split(","):
        if "#" in item:
            name, _sep, nth = item.partition("#")
            wanted = _number(name, 1, 7, DAY_NAMES, "day-of-week")
            if not nth.isdigit() or not 1 <= int(nth) <= 5:
                raise CronError(f"{item}: the number after # is the week of the month, 1-5")
            rules.append(lambda day, last, wanted=wanted, nth=int(nth): _weekday(day) == wanted
                         and (day.day - 1) // 7 + 1 == nth)
        elif item.endswith("L"):
            wanted = 7 if item == "L" else _number(item[:-1], 1, 7, DAY_NAMES, "day-of-week")
            rules.append(lambda day, last, wanted=wanted: _weekday(day) == wanted and day.day + 7 > last)
        else:
            days = _values(item, 1, 7, "day-of-week", DAY_NAMES)
            rules.append(lambda day, last, days=days: _weekday(day) in days)
    return rules


def parse(expression: str) -> Cron:
    """The parsed expression; CronError when an association cannot have it."""
    return Cron(expression)
