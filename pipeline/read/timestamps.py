"""The timestamp forms a seed may use, declared once as a table, and the one parser that reads them.

Feeds write dates in a few unambiguous styles: RFC 3339 / ISO 8601 (most tools), the same with a
trailing ``UTC`` or ``GMT`` (news APIs such as GNews), and RFC 2822 (RSS ``pubDate``, e-mail).
Each is read to the instant it names, in UTC. Anything that leaves the instant open (a zone
abbreviation such as ``EST`` or ``CET``, a two-digit year, a weekday that disagrees with the
date, an offset minute past 59) is refused with a message that names the part that is wrong.
``FORMS`` feeds the README and ``docs/rejects.md``; the tests walk it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone


@dataclass(frozen=True)
class Form:
    name: str
    example: str
    read_as: str


FORMS: tuple[Form, ...] = (
    Form("RFC 3339 / ISO 8601 date-time with an offset", "2023-10-08T16:23:00+02:00", "that instant, in UTC"),
    Form("the same, offset as `Z`, `+0200` or `+02`, `T` or a space", "2023-10-08 16:23:00.5 +0200", "that instant"),
    Form("the same with a trailing `UTC` or `GMT`", "2020-01-17 12:35:00 UTC", "that time in UTC"),
    Form("a date-time without a zone (seconds optional)", "2023-10-08T16:23", "that time in UTC"),
    Form("a date", "2023-10-08", "midnight UTC"),
    Form("RFC 2822 (RSS `pubDate`), weekday optional", "Fri, 17 Jan 2020 12:35:00 +0000", "that instant"),
    Form("RFC 2822 with `GMT`, `UT`, `UTC` or `Z`", "17 Jan 2020 12:35 GMT", "that time in UTC"),
)
REFUSED = (
    "zone names other than UTC/GMT/UT/Z (EST, CET, Europe/Paris: say the offset)",
    "offsets whose minutes pass 59 or whose hours pass 23",
    "a weekday that is not the date's",
    "two-digit years, the ISO basic format (20231008T1623Z), seconds since 1970",
    "impossible dates and leap seconds (:60)",
)
PRECISION = "Digits past the microsecond are cut, never rounded (the columns hold microseconds)."

_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:(?P<sep>[Tt ])(?P<time>\d{2}:\d{2}(?::\d{2}(?P<fraction>\.\d+)?)?)"
    r"(?:[ ]?(?P<zone>[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?))?)?"
)
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_RFC2822 = re.compile(
    r"(?:(?P<weekday>[A-Za-z]{3}),[ ]*)?(?P<day>\d{1,2})[ ]+(?P<month>[A-Za-z]{3})[ ]+(?P<year>\d{4})[ ]+"
    r"(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?[ ]+(?P<zone>[+-]\d{4}|UT|UTC|GMT|Z)"
)
_UTC_NAMES = frozenset(("Z", "z", "UT", "UTC", "GMT"))
# What an unaccepted value looks like, for the message.
_NAMED_ZONE = re.compile(r".*\d[ ]?(?P<zone>[A-Z]{2,5}|[A-Za-z]+/[A-Za-z_]+)")
_BASIC_FORMAT = re.compile(r"\d{8}(?:[Tt]\d{4,6}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:?\d{2})?)?")
_EPOCH = re.compile(r"[-+]?\d{9,13}(?:\.\d+)?")
_TWO_DIGIT_YEAR = re.compile(r"(?:[A-Za-z]{3},[ ]*)?\d{1,2}[ ]+[A-Za-z]{3}[ ]+\d{2}[ ]")
_LEAP_SECOND = re.compile(r"\d{2}:\d{2}:60(?!\d)")  # ISO and RFC 2822 clocks alike
EXPECTED = "expected an RFC 3339 / ISO 8601 or RFC 2822 date-time such as 2023-10-08T16:23:00Z (forms: docs/rejects.md)"


def parse(value: str) -> datetime | str:
    """``value`` read as an aware UTC datetime, or why it cannot be (a message naming the part)."""
    text = value.strip()
    if match := _ISO.fullmatch(text):
        return _from_iso(value, match)
    if match := _RFC2822.fullmatch(text):
        return _from_rfc2822(value, match)
    return _not_a_timestamp(value)


def _offset(value: str, zone: str | None) -> timezone | str:
    """The offset a zone spelling names; a message for one out of range."""
    if zone is None or zone in _UTC_NAMES:
        return UTC
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    if minutes > 59 or hours > 23:
        return f"{value!r} has the offset {zone!r}, whose {'minutes' if minutes > 59 else 'hours'} are out of range"
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(-delta if zone[0] == "-" else delta)


def _from_iso(value: str, match: re.Match[str]) -> datetime | str:
    offset = _offset(value, match.group("zone"))
    if isinstance(offset, str):
        return offset
    clock = match.group("time") or "00:00"
    fraction = match.group("fraction")
    if fraction and len(fraction) > 7:  # '.' + more than 6 digits: microseconds are what we keep
        clock = clock[: len(clock) - len(fraction) + 7]
    try:
        naive = datetime.fromisoformat(f"{match.group('date')}T{clock}")
    except ValueError as exc:
        return _impossible(value, exc)
    return to_utc(value, naive.replace(tzinfo=offset))


def _from_rfc2822(value: str, match: re.Match[str]) -> datetime | str:
    month_name, weekday = match.group("month").title(), match.group("weekday")
    if month_name not in _MONTHS:
        return f"{value!r} names the month {match.group('month')!r}; RFC 2822 months are {', '.join(_MONTHS)}"
    offset = _offset(value, match.group("zone"))
    if isinstance(offset, str):
        return offset
    try:
        naive = datetime(
            int(match.group("year")),
            _MONTHS.index(month_name) + 1,
            int(match.group("day")),
            int(match.group("hour")),
            int(match.group("minute")),
            int(match.group("second") or 0),
        )
    except ValueError as exc:
        return _impossible(value, exc)
    if weekday is not None and weekday.title() != _DAYS[naive.weekday()]:
        return f"{value!r} says {weekday!r}, but {naive:%Y-%m-%d} is a {_DAYS[naive.weekday()]}"
    return to_utc(value, naive.replace(tzinfo=offset))


def to_utc(value: str, moment: datetime) -> datetime | str:
    """An aware ``moment`` in UTC, or why it has no UTC reading."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return f"{value!r} falls outside years 1-9999 in UTC"


def _impossible(value: str, exc: ValueError) -> str:
    """Why a well-formed timestamp is not a real moment."""
    if _LEAP_SECOND.search(value):
        return f"{value!r} is a leap second (:60), which timestamps cannot hold; write :59 or the next minute"
    return f"{value!r} is not a real date/time ({exc})"


def _not_a_timestamp(value: str) -> str:
    """What a value that is not an accepted timestamp looks like instead."""
    text = value.strip()
    if _EPOCH.fullmatch(text):
        return f"{EXPECTED}, got the number {text!r} (seconds since 1970? write the date and time out)"
    if _BASIC_FORMAT.fullmatch(text):
        return f"{EXPECTED}, got {text!r} in ISO 8601 basic format (no '-' and ':'); use the extended format"
    if _TWO_DIGIT_YEAR.match(text):
        return f"{EXPECTED}, got {text!r} with a two-digit year; write the year in full"
    named = _NAMED_ZONE.fullmatch(text)
    if named and named.group("zone") not in _UTC_NAMES:
        zone = named.group("zone")
        return f"{EXPECTED}, got {text!r}: the zone {zone!r} is a name, not an offset; write it as an offset such as -05:00"
    return f"{EXPECTED}, got {value!r}"
