"""Remote consultation wired to AWS from Settings: functions/consultations (API),
functions/consultation_workflow (the state machine's tasks), the benchmark.

    service = build_consultations(Settings.from_env(os.environ).require(*CONSULTATION_SETTINGS))

Clients are built on first use, never at import time.
"""

from __future__ import annotations

import json
from typing import Any

from yilian.adapters.records_wiring import RECORD_SETTINGS
from yilian.settings import Settings

CONSULTATION_SETTINGS = (*RECORD_SETTINGS, "consultations_table")


def build_consultations(settings: Settings) -> Any:
    from yilian.adapters.aws import client
    from yilian.adapters.consultation_store import DynamoConsultationStore, StaleConsultation
    from yilian.adapters.records_wiring import build_records
    from yilian.adapters.workflow import StepFunctionsCallbacks
    from yilian.domain.consultation import Limits, Tariff
    from yilian.services.consultations import ConsultationService

    records = build_records(settings)
    access = records.access
    return ConsultationService(
        DynamoConsultationStore(client(settings, "dynamodb"), settings.consultations_table),
        access.persons,
        access.directory,
        StepFunctionsCallbacks(client(settings, "stepfunctions")),
        access.audit,
        state_machine_arn=settings.consultation_state_machine,
        records=records.service,
        notices=access.notices,
        limits=Limits.from_mapping(json.loads(settings.consultation_limits or "{}")),
        tariff=Tariff.from_mapping(json.loads(settings.consultation_tariff or "{}")),
        stale=StaleConsultation,
        video_base_url=settings.video_base_url or "https://meet.yilian.local",
    )
