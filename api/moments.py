"""Time parameters: ISO 8601 or unix seconds read as aware UTC datetimes, and minutes as URLs show them."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from api.problems import ProblemError

# A leap second (`23:59:60`, `235960`): Python's datetime has no second 60.
LEAP_SECOND = re.compile(r"([Tt ]\d\d:?\d\d:?)60(?!\d)")


def parse_moment(value: str, name: str = "datetime") -> datetime:
    """ISO 8601 (offset or Z; naive means UTC) or unix seconds, as an aware UTC datetime; `name` is
    the parameter an error names. A leap second is read as the second before it (23:59:60Z as
    23:59:59Z, the same minute); the second 60 of any other minute than a UTC day's last is refused."""
    text = value.strip()
    iso, leap = LEAP_SECOND.subn(r"\g<1>59", text, count=1)  # no number matches: it has no T or space
    try:
        try:
            moment = datetime.fromtimestamp(float(text), UTC)
        except ValueError:
            moment = datetime.fromisoformat(iso.replace("z", "Z"))
        moment = moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)  # 0001-01-01T00:00+01:00 overflows
    except (ValueError, OverflowError, OSError):
        raise ProblemError(
            422,
            "Invalid parameter",
            f"{name}: {value[:64]!r} is neither ISO 8601 nor unix seconds (in the years 1 to 9999, UTC)",
        ) from None
    if leap and (moment.hour, moment.minute) != (23, 59):
        raise ProblemError(
            422,
            "Invalid parameter",
            f"{name}: {value[:64]!r} has second 60, a leap second, which only a UTC day's last minute "
            "has (23:59:60Z, read as 23:59:59Z)",
        )
    return moment


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def minute_url(minute: datetime) -> str:
    return minute.strftime("%Y-%m-%dT%H:%MZ")
