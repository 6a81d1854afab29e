"""The FHIR R4 view of a referral: a ServiceRequest (the order: who refers whom where, why)
and a Task (its fulfilment: status, owner, history of business status), as NHS e-RS and the
FHIR referral workflow pattern model it. Validated with fhir.resources (R4B models, which
equal R4 for these resources), imported lazily.
"""

from __future__ import annotations

from typing import Any

from yilian.domain.referral import Referral, Status

BASE = "https://yilian.example/fhir"
ICD10_SYSTEM = "http://hl7.org/fhir/sid/icd-10"
PRIORITY = {"routine": "routine", "urgent": "urgent", "emergency": "stat"}
TASK_STATUS = {
    Status.PENDING_REVIEW: "requested",
    Status.MORE_INFO: "on-hold",
    Status.ESCALATED: "received",
    Status.ACCEPTED: "accepted",
    Status.ARRIVED: "completed",
    Status.ACKNOWLEDGED: "completed",
    Status.NO_SHOW: "failed",
    Status.REJECTED: "rejected",
    Status.CANCELLED: "cancelled",
    Status.EXPIRED: "failed",
}
REQUEST_STATUS = {
    Status.CANCELLED: "revoked",
    Status.REJECTED: "revoked",
    Status.EXPIRED: "revoked",
    Status.NO_SHOW: "completed",
    Status.ARRIVED: "completed",
    Status.ACKNOWLEDGED: "completed",
}


def _org(party: Any) -> dict[str, Any]:
    return {"reference": f"Organization/{party.institution_id}", "display": party.name}


def referral_bundle(r: Referral) -> dict[str, Any]:
    from fhir.resources.R4B.bundle import Bundle  # lazy: heavy

    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "id": r.referral_id,
        "identifier": [{"system": f"{BASE}/sid/referral", "value": r.referral_id}],
        "status": REQUEST_STATUS.get(r.status, "active"),
        "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "3457005",
                                  "display": "Patient referral"}],
                      "text": "上转" if r.direction.value == "up" else "下转"}],
        "priority": PRIORITY[r.urgency.value],
        "subject": {"reference": f"Patient/{r.person_id}", "display": r.patient.get("name")},
        "authoredOn": r.created_at,
        "requester": {"reference": f"Practitioner/{r.referring_doctor['sub']}",
                      "display": r.referring_doctor.get("name")},
        "performer": [_org(r.target)],
        "reasonCode": [{"coding": [{"system": ICD10_SYSTEM, "code": r.diagnosis["code"],
                                    "display": r.diagnosis["text"]}],
                        "text": r.reason}],
        "note": [{"text": r.clinical_summary}] if r.clinical_summary else None,
        "supportingInfo": [{"reference": a["ref"], "display": a.get("title") or a["kind"]}
                           for a in r.attachments] or None,
    }  # fmt: skip
    if r.target_department:
        request["performerType"] = {"text": r.target_department}
    task = {
        "resourceType": "Task",
        "id": f"{r.referral_id}-task",
        "status": TASK_STATUS[r.status],
        "businessStatus": {"text": r.status.value},
        "intent": "order",
        "focus": {"reference": f"ServiceRequest/{r.referral_id}"},
        "for": {"reference": f"Patient/{r.person_id}"},
        "authoredOn": r.created_at,
        "lastModified": r.updated_at,
        "requester": _org(r.source),
        "owner": _org(r.target),
    }
    if r.due_at:
        task["restriction"] = {"period": {"end": r.due_at}}
    if r.decision and r.decision.get("reason_code"):
        task["statusReason"] = {"text": r.decision["reason_code"]}
    entries = [
        {"fullUrl": f"{BASE}/ServiceRequest/{r.referral_id}",
         "resource": {k: v for k, v in request.items() if v is not None}},
        {"fullUrl": f"{BASE}/Task/{r.referral_id}-task", "resource": task},
    ]  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    return Bundle.model_validate(bundle).model_dump(mode="json", exclude_none=True)
