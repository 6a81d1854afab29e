"""Time in one place: Asia/Shanghai for what people see, UTC-offset ISO strings stored."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

CHINA_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")


def now() -> datetime:
    return datetime.now(CHINA_TZ)


def now_iso() -> str:
    return now().isoformat(timespec="milliseconds")
