"""The FHIR R4 Patient view of a person of the patient index (fhir.resources, imported lazily:
about 0.2 s, paid only by the request that asks for FHIR).

fhir.resources 8 ships R5 at its top level and R4B in a subpackage; R4B's Patient is R4's
Patient (the R4 -> R4B changes do not touch it), so the R4B model validates what we serve.

- identifier: every identifier the person holds (merged-in ones included), values masked,
  with the national OIDs of the WS/T 500 shared documents: 身份证号 2.16.156.10011.1.3,
  健康卡号 2.16.156.10011.1.19, 医保卡号 2.16.156.10011.1.15; an institution's patient number
  under https://yilian.example/fhir/sid/local/{institution} (type MR, assigner).
  meta.security MASKED says the values are redacted.
- name: the name in characters (ISO 21090 representation IDE) and in pinyin (ABC), both
  'official', as FHIR's EN-representation extension intends for alternative scripts.
- link: 'seealso' for linked persons, 'replaced-by' for a merged person's survivor,
  'replaces' for the persons a survivor absorbed.
"""

from __future__ import annotations

from typing import Any

from yilian.domain.identity import IdentifierType
from yilian.domain.names import has_han, split_name
from yilian.domain.person import Person, PersonStatus

SID_BASE = "https://yilian.example/fhir/sid"
SYSTEMS = {
    IdentifierType.ID_CARD: "urn:oid:2.16.156.10011.1.3",
    IdentifierType.HEALTH_CARD: "urn:oid:2.16.156.10011.1.19",
    IdentifierType.INSURANCE: "urn:oid:2.16.156.10011.1.15",
}
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
TYPES = {  # v2-0203 code, display text
    IdentifierType.ID_CARD: ("NI", "居民身份证"),
    IdentifierType.HEALTH_CARD: ("JHN", "电子健康卡"),
    IdentifierType.INSURANCE: ("NH", "医保电子凭证"),
    IdentifierType.LOCAL: ("MR", "院内患者编号"),
}
REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
MASKED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "MASKED"}


def patient_resource(person: Person) -> dict[str, Any]:
    from fhir.resources.R4B.patient import Patient  # lazy: heavy

    resource = Patient.model_validate(_patient(person))
    return resource.model_dump(mode="json", exclude_none=True)


def _patient(p: Person) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Patient",
        "id": p.person_id,
        "meta": {"security": [MASKED]},
        "active": p.status is PersonStatus.ACTIVE,
        "identifier": [_identifier(i.type, i.masked, i.assigner) for i in p.identifiers],
        "name": _names(p),
        "gender": p.sex,
        "birthDate": p.birth_date,
    }
    if p.phone_masked:
        out["telecom"] = [{"system": "phone", "value": p.phone_masked, "use": "mobile"}]
    if p.address:
        out["address"] = [{"use": "home", "text": p.address, "country": "CN"}]
    links = [_link(o, "seealso") for o in p.links]
    if p.merged_into:
        links.append(_link(p.merged_into, "replaced-by"))
    links.extend(_link(o, "replaces") for o in p.replaces)
    if links:
        out["link"] = links
    return out


def _identifier(kind: IdentifierType, masked: str, assigner: str | None) -> dict[str, Any]:
    code, text = TYPES[kind]
    ident: dict[str, Any] = {
        "use": "official" if kind is not IdentifierType.LOCAL else "usual",
        "type": {"coding": [{"system": V2_0203, "code": code}], "text": text},
        "system": SYSTEMS.get(kind) or f"{SID_BASE}/local/{assigner}",
        "value": masked,
    }
    if assigner:
        ident["assigner"] = {"reference": f"Organization/{assigner}", "display": assigner}
    return ident


def _names(p: Person) -> list[dict[str, Any]]:
    family, given = split_name(p.name)
    first: dict[str, Any] = {"use": "official", "text": p.name, "family": family}
    if given:
        first["given"] = [given]
    if not has_han(p.name):
        return [first]
    syl = [s.capitalize() for s in p.pinyin]
    if "·" in p.name:  # a transliterated name: its pinyin follows the written order
        first["extension"] = [{"url": REPRESENTATION, "valueCode": "IDE"}]
        alphabetic = {
            "use": "official",
            "text": " ".join(syl),
            "extension": [{"url": REPRESENTATION, "valueCode": "ABC"}],
        }
        return [first, alphabetic]
    first["extension"] = [{"url": REPRESENTATION, "valueCode": "IDE"}]
    n_family = _syllable_count(family)
    latin: dict[str, Any] = {
        "use": "official",
        "text": " ".join(syl),
        "family": "".join(syl[:n_family]),
        "extension": [{"url": REPRESENTATION, "valueCode": "ABC"}],
    }
    if syl[n_family:]:
        latin["given"] = ["".join(s.lower() if i else s for i, s in enumerate(syl[n_family:]))]
    return [first, latin]


def _syllable_count(family: str) -> int:
    return sum(1 for ch in family if has_han(ch)) or 1


def _link(other: str, kind: str) -> dict[str, Any]:
    return {"other": {"reference": f"Patient/{other}"}, "type": kind}
