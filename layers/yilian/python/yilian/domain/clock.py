"""Time in one place: Asia/Shanghai for what people see, UTC-offset ISO strings stored."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from yilian.domain.errors import InvalidInput

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")


def now() -> datetime:
    return datetime.now(CHINA_TZ)


def now_iso() -> str:
    return now().isoformat(timespec="milliseconds")


def iso(t: datetime) -> str:
    """A time as stored and shown: ISO-8601 in Asia/Shanghai, with its +08:00 offset."""
    return t.astimezone(CHINA_TZ).isoformat(timespec="seconds")


def parse_time(value: str, what: str = "time") -> datetime:
    """An ISO-8601 time with its offset; a naive time is refused (all times carry +08:00)."""
    try:
        t = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise InvalidInput("INVALID_TIME", f"{what} is not an ISO-8601 time: {value!r}") from None
    if t.tzinfo is None:
        raise InvalidInput("TIME_WITHOUT_OFFSET", f"{what} needs an offset, e.g. +08:00")
    return t


DATE_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_date(value: str, what: str = "date") -> date:
    """Exactly YYYY-MM-DD (Python also accepts 20260601 and week dates; the API does not)."""
    if not isinstance(value, str) or not DATE_FORMAT.fullmatch(value):
        raise InvalidInput("INVALID_DATE", f"{what} is not a date (YYYY-MM-DD): {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            "INVALID_DATE", f"{what} is not a date (YYYY-MM-DD): {value!r}"
        ) from None
