"""Who hears about a referral change, and how (the notifier).

`notifications_for` turns one event into messages for recipients: the referring doctor, the
receiving institution's staff, the referral centre, and the patient. Channels deliver them:
the in-app inbox today (the web client and the mini-program read it); SMS and WeChat
subscription-message adapters implement the same `Channel` port later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from yilian.domain.principal import Principal, Role

ADMINS_RECIPIENT = "admins"
CENTRE_RECIPIENT = "centre"

TITLES = {
    "PENDING_REVIEW": "新的转诊申请待审核",
    "MORE_INFO": "转诊需要补充资料",
    "ESCALATED": "转诊审核超时，已上报转诊中心",
    "ACCEPTED": "转诊已接收，请安排患者到院",
    "ARRIVED": "患者已到院",
    "NO_SHOW": "患者未按时到院",
    "ACKNOWLEDGED": "下转已被接收",
    "REJECTED": "转诊被拒绝",
    "CANCELLED": "转诊已撤销",
    "EXPIRED": "转诊已超时关闭",
}


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    consortium_id: str
    recipient: str  # user:{sub} | inst:{institution_id} | person:{person_id} | centre
    kind: str
    title: str
    body: str
    at: str
    referral_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"notification_id": self.notification_id, "recipient": self.recipient,
                "kind": self.kind, "title": self.title, "body": self.body, "at": self.at,
                "referral_id": self.referral_id}  # fmt: skip


class Channel(Protocol):
    def deliver(self, notification: Notification) -> None: ...


class Inbox(Protocol):
    def deliver(self, notification: Notification) -> None: ...
    def for_recipients(
        self, consortium_id: str, recipients: Sequence[str], limit: int
    ) -> list[dict]: ...


def recipients_of(principal: Principal) -> list[str]:
    """Every inbox this caller reads: their own, their institution's, the centre's."""
    out = [f"user:{principal.subject}"]
    if principal.role is Role.RESIDENT and principal.person_id:
        out.append(f"person:{principal.person_id}")
    elif principal.institution_id:
        out.append(f"inst:{principal.institution_id}")
    if principal.role in (Role.REFERRAL_CENTRE, Role.CONSORTIUM_ADMIN):
        out.append(CENTRE_RECIPIENT)
    if principal.role is Role.CONSORTIUM_ADMIN:
        out.append(ADMINS_RECIPIENT)  # notices for review (record break-glass)
    return out


def notifications_for(detail_type: str, detail: Mapping[str, Any]) -> list[Notification]:
    if detail_type in BOOKING_NOTICES:
        return _booking_notice(detail_type, detail)
    if detail_type not in ("ReferralApplied", "ReferralStatusChanged"):
        return []  # ReferralAccepted is the booking service's; its status change is told here
    status = str(detail["status"])
    ref = str(detail["referral_id"])
    to_inst, referrer = detail["to_institution"], detail["referring_doctor"]
    recipients: list[str] = []
    if status in ("PENDING_REVIEW", "CANCELLED"):
        recipients.append(f"inst:{to_inst}")
    if status in ("MORE_INFO", "ESCALATED", "ACCEPTED", "ACKNOWLEDGED", "REJECTED", "EXPIRED",
                  "ARRIVED", "NO_SHOW"):  # fmt: skip
        recipients.append(f"user:{referrer}")
    if status in ("ESCALATED",):
        recipients.append(CENTRE_RECIPIENT)
    if status in ("ACCEPTED", "REJECTED", "ACKNOWLEDGED", "EXPIRED"):
        recipients.append(f"person:{detail['person_id']}")
    body = f"转诊单 {ref}：{TITLES.get(status, status)}"
    if detail.get("proposed_time"):
        body += f"，建议到院时间 {detail['proposed_time']}"
    at = str(detail.get("at") or "")
    return [
        Notification(
            notification_id=_notification_id(ref, status, at, r),
            consortium_id=str(detail["consortium_id"]),
            recipient=r, kind=f"referral.{status.lower()}", title=TITLES.get(status, status),
            body=body, at=at, referral_id=ref,
        )
        for r in recipients
    ]  # fmt: skip


BOOKING_NOTICES = {
    "AppointmentCancelled": "预约已取消",
    "ReferralSlotUnavailable": "转诊患者暂无可用预留号源，请人工安排",
}


def _booking_notice(detail_type: str, detail: Mapping[str, Any]) -> list[Notification]:
    """A cancelled appointment tells its resident (a doctor's leave, a cancelled session);
    a referral without a reserved place tells the receiving institution to arrange one."""
    title = BOOKING_NOTICES[detail_type]
    at = str(detail.get("at") or "")
    if detail_type == "AppointmentCancelled":
        key, recipient = str(detail["appointment_id"]), f"person:{detail['person_id']}"
        body = f"{detail.get('start', '')[:16]} {detail.get('department', '')} 的预约已取消"
        if detail.get("reason"):
            body += f"：{detail['reason']}"
    else:
        key, recipient = str(detail["referral_id"]), f"inst:{detail['to_institution']}"
        body = (
            f"转诊单 {detail['referral_id']}：{detail.get('target_department') or ''}暂无预留号源"
        )
    return [
        Notification(
            notification_id=_notification_id(key, detail_type, at, recipient),
            consortium_id=str(detail["consortium_id"]),
            recipient=recipient,
            kind=f"booking.{detail_type}",
            title=title,
            body=body,
            at=at,
            referral_id=detail.get("referral_id"),
        )
    ]


def _notification_id(referral_id: str, status: str, at: str, recipient: str) -> str:
    """Derived from the event, not drawn: a redelivered event (EventBridge and the stream
    relay deliver at least once) writes the same inbox item again, never a second one."""
    raw = "|".join((referral_id, status, at, recipient)).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()[:32]


class Notifier:
    def __init__(self, channels: Sequence[Channel]) -> None:
        self.channels = channels

    def handle(self, detail_type: str, detail: Mapping[str, Any]) -> int:
        sent = 0
        for notification in notifications_for(detail_type, detail):
            for channel in self.channels:
                channel.deliver(notification)
            sent += 1
        return sent
