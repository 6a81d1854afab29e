"""FHIR R4 views of booking: a slot as a Slot, an appointment as an Appointment
(fhir.resources R4B models, equal to R4 for these resources; imported lazily)."""

from __future__ import annotations

from typing import Any

from yilian.domain.booking import Appointment, AppointmentStatus, Slot

APPOINTMENT_STATUS = {
    AppointmentStatus.BOOKED: "booked",
    AppointmentStatus.CHECKED_IN: "checked-in",
    AppointmentStatus.CANCELLED: "cancelled",
    AppointmentStatus.NO_SHOW: "noshow",
}


def slot_resource(slot: Slot) -> dict[str, Any]:
    from fhir.resources.R4B.slot import Slot as FhirSlot

    full = slot.booked >= slot.capacity or slot.status != "OPEN"
    resource = {
        "resourceType": "Slot",
        "id": slot.slot_id.replace(".", "-"),
        "identifier": [{"system": "https://yilian.example/fhir/sid/slot", "value": slot.slot_id}],
        "schedule": {
            "reference": f"Schedule/{slot.session_id.replace('.', '-')}",
            "display": f"{slot.department} {slot.doctor_name}".strip(),
        },
        "status": "busy-unavailable" if slot.status != "OPEN" else ("busy" if full else "free"),
        "start": slot.start,
        "end": slot.end,
        "serviceType": [{"text": slot.department}],
        "appointmentType": {"text": slot.visit_type},
        "comment": f"capacity {slot.capacity}, reserved for referrals {slot.reserved}",
    }
    return FhirSlot.model_validate(resource).model_dump(mode="json", exclude_none=True)


def appointment_resource(appt: Appointment) -> dict[str, Any]:
    from fhir.resources.R4B.appointment import Appointment as FhirAppointment

    participants = [
        {
            "actor": {
                "reference": f"Patient/{appt.person_id}",
                "display": appt.patient_name or None,
            },
            "status": "accepted",
        },
        {"actor": {"reference": f"Organization/{appt.institution_id}"}, "status": "accepted"},
    ]
    if appt.doctor_id:
        participants.append(
            {
                "actor": {
                    "reference": f"Practitioner/{appt.doctor_id}",
                    "display": appt.doctor_name or None,
                },
                "status": "accepted",
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": appt.appointment_id,
        "status": APPOINTMENT_STATUS[appt.status],
        "serviceType": [{"text": appt.department}],
        "appointmentType": {"text": appt.visit_type},
        "start": appt.start,
        "end": appt.end,
        "created": appt.created_at,
        "slot": [{"reference": f"Slot/{appt.slot_id.replace('.', '-')}"}],
        "participant": participants,
    }
    if appt.referral_id:
        resource["basedOn"] = [{"reference": f"ServiceRequest/{appt.referral_id}"}]
    return FhirAppointment.model_validate(resource).model_dump(mode="json", exclude_none=True)
