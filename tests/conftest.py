"""Fixtures shared across test layers (kept minimal: each layer has its own conftest)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

# Referral time limits for the test stack: emergencies time out in seconds (escalation,
# expiry and no-show tests wait for them); routine and urgent ones never do during a run.
TEST_REFERRAL_LIMITS = {
    "review": {"emergency": 3, "urgent": 900, "routine": 900},
    "escalation": {"emergency": 3, "urgent": 900, "routine": 900},
    "amendment": 900,
    "arrival": {"emergency": 3, "urgent": 900, "routine": 900},
}
# Failed ingests retry at once (no back-off) and files over 8 MB are refused, so the
# dead-letter and size-limit paths run in seconds with small files.
TEST_IMAGING_POLICY = {"retry_base_seconds": 0, "max_file_mb": 8}
# Urgent consultations run on seconds (review → escalation → expiry, silent experts → the next
# candidate); routine and MDT ones keep limits no test run reaches.
TEST_CONSULTATION_LIMITS = {"review": {"urgent": 3}, "escalation": 3,
                            "invitation": {"urgent": 3}, "reminder": 2, "session_grace": 2}


@pytest.fixture(scope="session")
def local_stack() -> Iterator:
    """The embedded local stack with the demo county: started once per session, then stopped.

    template.yaml deployed into in-process moto, handlers run in-process, the API served over
    HTTP (``local_stack.api_url``). See infra/local/yilian_local/stack.py.
    """
    from yilian_local.stack import REPO_ROOT, LocalStack, load_county_params

    # The web client too, when built (tests/browser builds it before this starts).
    web_root = REPO_ROOT / "web" / "dist"
    params = {**load_county_params("demo"), "ReferralLimits": json.dumps(TEST_REFERRAL_LIMITS),
              "ImagingPolicy": json.dumps(TEST_IMAGING_POLICY),
              "ConsultationLimits": json.dumps(TEST_CONSULTATION_LIMITS)}  # fmt: skip
    with LocalStack(params, web_root=web_root) as stack:
        yield stack
