"""FHIR R4 at the health-record edge: structural validation of contributed Bundles with
fhir.resources (R4B models, which are R4's for every resource accepted here), and the
Bundles the record serves: searchset results, Patient/$everything, AuditEvent exports.

fhir.resources is imported lazily (about 0.2 s), paid only by requests that speak FHIR.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from yilian.domain.errors import InvalidInput

MAX_ISSUES = 20


def validate_bundle(bundle: Mapping[str, Any]) -> None:
    """fhir.resources' verdict on a Bundle, as one InvalidInput listing where and why."""
    from fhir.resources.R4B.bundle import Bundle
    from pydantic import ValidationError

    try:
        Bundle.model_validate(bundle)
    except ValidationError as exc:
        issues = [
            {"path": ".".join(str(p) for p in e.get("loc", ())) or "Bundle",
             "message": str(e.get("msg", ""))[:300]}
            for e in exc.errors()[:MAX_ISSUES]
        ]  # fmt: skip
        raise InvalidInput(
            "FHIR_INVALID", "the Bundle is not valid FHIR R4", issues=issues,
            total=exc.error_count(),
        ) from None  # fmt: skip
    except (TypeError, ValueError) as exc:  # fhir.resources' own checks (e.g. unknown type)
        message = f"the Bundle is not valid FHIR R4: {exc}"[:400]
        raise InvalidInput("FHIR_INVALID", message) from None


def searchset(resources: Iterable[Mapping[str, Any]], base: str) -> dict[str, Any]:
    items = list(resources)
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(items),
        "entry": [
            {"fullUrl": f"{base}/{r['resourceType']}/{r['id']}", "resource": r,
             "search": {"mode": "match"}}
            for r in items
        ],
    }  # fmt: skip


def everything(
    patient: Mapping[str, Any], resources: Iterable[Mapping[str, Any]], base: str
) -> dict[str, Any]:
    """Patient/$everything: the Patient first, then every resource of the record."""
    bundle = searchset([patient, *resources], base)
    bundle["entry"][0]["search"] = {"mode": "match"}
    for e in bundle["entry"][1:]:
        e["search"] = {"mode": "include"}
    return bundle


def audit_events(events: Iterable[Mapping[str, Any]], consortium_id: str) -> dict[str, Any]:
    """Stored audit records as FHIR AuditEvent resources (R4), in a collection Bundle."""
    from fhir.resources.R4B.auditevent import AuditEvent

    out = []
    for e in events:
        resource = AuditEvent.model_validate(_audit_event(e, consortium_id))
        out.append({"resource": resource.model_dump(mode="json", exclude_none=True)})
    return {"resourceType": "Bundle", "type": "collection", "total": len(out), "entry": out}


def _audit_event(e: Mapping[str, Any], consortium_id: str) -> dict[str, Any]:
    agent = e.get("agent") or {}
    detail = e.get("detail") or {}
    return {
        "resourceType": "AuditEvent",
        "id": e["id"],
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "https://yilian.example/fhir/CodeSystem/audit-what",
                     "code": e["what"]}],
        "action": e["action"],
        "recorded": e["recorded"],
        "outcome": e["outcome"],
        "purposeOfEvent": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": "ETREAT" if e.get("purpose") == "emergency" else "TREAT"}]}],
        "agent": [{
            "who": {"identifier": {"system": "https://yilian.example/fhir/sid/user",
                                   "value": agent.get("subject", "")},
                    "display": agent.get("name") or agent.get("subject", "")},
            "role": [{"text": agent.get("role", "")}],
            "requestor": True,
            **({"location": {"reference": f"Organization/{agent['institution']}"}}
               if agent.get("institution") else {}),
        }],
        "source": {"site": consortium_id, "observer": {"display": "yilian"}},
        "entity": [
            {"what": {"reference": f"Patient/{p}"},
             **({"detail": [{"type": k, "valueString": str(v) or "-"}
                            for k, v in detail.items()]} if detail else {})}
            for p in e.get("persons") or [] if p != "-"
        ] or None,
    }  # fmt: skip
