"""One typed settings object per function, read from the environment once in app.py.

Code below the handler never reads os.environ: it is handed a Settings. `require` names what
a function needs so a missing variable fails at cold start with a clear message, not deep in
a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields


class ConfigurationError(RuntimeError):
    """The function was deployed without a setting it needs."""


@dataclass(frozen=True, slots=True)
class Settings:
    consortium_id: str = ""
    env: str = "prod"
    county_code: str = ""
    region: str = ""
    aws_endpoint_url: str | None = None  # set only in the local stacks
    persons_table: str = ""
    directory_table: str = ""
    platform_table: str = ""
    audit_table: str = ""
    idempotency_table: str = ""
    import_bucket: str = ""
    data_key: str = ""
    token_issuer: str = ""
    token_audience: str = ""
    token_signing_key: str = ""
    external_jwks_url: str = ""
    external_issuer: str = ""
    match_threshold: float = 0.92
    review_threshold: float = 0.70
    referrals_table: str = ""
    referral_stats_table: str = ""
    referral_state_machine: str = ""
    referral_limits: str = ""  # JSON, see yilian.domain.referral.TimeLimits
    event_bus: str = ""
    bookings_table: str = ""
    booking_policy: str = ""  # JSON, see yilian.domain.booking.BookingPolicy
    records_table: str = ""
    records_bucket: str = ""
    record_policy: str = ""  # JSON, see yilian.domain.access.RecordPolicy
    imaging_table: str = ""
    imaging_bucket: str = ""
    imaging_policy: str = ""  # JSON, see yilian.domain.imaging.ImagingPolicy
    imaging_queue_url: str = ""
    imaging_dead_letter_url: str = ""
    consultations_table: str = ""
    consultation_state_machine: str = ""
    consultation_limits: str = ""  # JSON, see yilian.domain.consultation.Limits
    consultation_tariff: str = ""  # JSON, see yilian.domain.consultation.Tariff
    video_base_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        def get(name: str) -> str:
            return environ.get(name, "")

        return cls(
            consortium_id=get("YL_CONSORTIUM_ID"),
            env=get("YL_ENV") or "prod",
            county_code=get("YL_COUNTY_CODE"),
            region=get("AWS_REGION") or get("AWS_DEFAULT_REGION"),
            aws_endpoint_url=get("AWS_ENDPOINT_URL") or None,
            persons_table=get("YL_PERSONS_TABLE"),
            directory_table=get("YL_DIRECTORY_TABLE"),
            platform_table=get("YL_PLATFORM_TABLE"),
            audit_table=get("YL_AUDIT_TABLE"),
            idempotency_table=get("YL_IDEMPOTENCY_TABLE"),
            import_bucket=get("YL_IMPORT_BUCKET"),
            data_key=get("YL_DATA_KEY"),
            token_issuer=get("YL_TOKEN_ISSUER"),
            token_audience=get("YL_TOKEN_AUDIENCE"),
            token_signing_key=get("YL_TOKEN_SIGNING_KEY"),
            external_jwks_url=get("YL_EXTERNAL_JWKS_URL"),
            external_issuer=get("YL_EXTERNAL_ISSUER"),
            match_threshold=float(get("YL_MATCH_THRESHOLD") or 0.92),
            review_threshold=float(get("YL_REVIEW_THRESHOLD") or 0.70),
            referrals_table=get("YL_REFERRALS_TABLE"),
            referral_stats_table=get("YL_REFERRAL_STATS_TABLE"),
            referral_state_machine=get("YL_REFERRAL_STATE_MACHINE"),
            referral_limits=get("YL_REFERRAL_LIMITS"),
            event_bus=get("YL_EVENT_BUS"),
            bookings_table=get("YL_BOOKINGS_TABLE"),
            booking_policy=get("YL_BOOKING_POLICY"),
            records_table=get("YL_RECORDS_TABLE"),
            records_bucket=get("YL_RECORDS_BUCKET"),
            record_policy=get("YL_RECORD_POLICY"),
            imaging_table=get("YL_IMAGING_TABLE"),
            imaging_bucket=get("YL_IMAGING_BUCKET"),
            imaging_policy=get("YL_IMAGING_POLICY"),
            imaging_queue_url=get("YL_IMAGING_QUEUE_URL"),
            imaging_dead_letter_url=get("YL_IMAGING_DEAD_LETTER_URL"),
            consultations_table=get("YL_CONSULTATIONS_TABLE"),
            consultation_state_machine=get("YL_CONSULTATION_STATE_MACHINE"),
            consultation_limits=get("YL_CONSULTATION_LIMITS"),
            consultation_tariff=get("YL_CONSULTATION_TARIFF"),
            video_base_url=get("YL_VIDEO_BASE_URL"),
        )

    def require(self, *names: str) -> Settings:
        known = {f.name for f in fields(self)}
        missing = [n for n in names if n not in known or not getattr(self, n)]
        if missing:
            raise ConfigurationError(f"missing settings: {', '.join(missing)}")
        return self
