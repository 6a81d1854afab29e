"""The imaging rules in plain Python: the policy, object keys, QIDO queries, reports, cloud-film
share links, the DICOM patient as the master index sees it, and the report as a FHIR record."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from yilian.api.fhir_record import validate_bundle
from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import Forbidden, Gone, InvalidInput
from yilian.domain.imaging import (
    DicomPatient,
    DicomRejected,
    ImagingPolicy,
    ReportStatus,
    new_share_link,
    next_report_status,
    object_key,
    parse_date_range,
    parse_modalities,
    parse_object_key,
    parse_report,
    report_bundle,
    safe_file_name,
    valid_uid,
)
from yilian.domain.imaging import check_share as check
from yilian.domain.imaging import mask_id_card as mask
from yilian.domain.record import Kind, precheck, read_document

C = "demo-county"
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=CHINA_TZ)
POLICY = ImagingPolicy()
STUDY_UID = "1.2.826.0.1.3680043.10.1234.1"


# ----------------------------------------------------------------------------- policy
def test_policy_defaults_and_overrides_from_the_template_parameter() -> None:
    # Given the template's ImagingPolicy JSON naming a few fields
    raw = {"max_file_mb": 8, "reading_institutions": ["county-hospital"]}
    # When it is read
    policy = ImagingPolicy.from_mapping(raw)
    # Then those fields are taken, the rest default
    assert policy.max_file_bytes == 8 * 1024 * 1024
    assert policy.reading_institutions == ("county-hospital",)
    assert policy.share_max_days == ImagingPolicy().share_max_days


def test_policy_refuses_an_unknown_field() -> None:
    # Given a misspelt field / When read / Then it is refused by name
    with pytest.raises(ValueError, match="max_file_gb"):
        ImagingPolicy.from_mapping({"max_file_gb": 1})


def test_policy_refuses_a_default_share_longer_than_the_maximum() -> None:
    with pytest.raises(ValueError):
        ImagingPolicy.from_mapping({"share_default_days": 40, "share_max_days": 30})


def test_retry_delay_backs_off_exponentially_and_is_capped() -> None:
    # Given base 30 s and a 900 s cap
    policy = ImagingPolicy(retry_base_seconds=30, retry_max_seconds=900)
    # When / Then: 30, 60, 120, ... never above the cap
    assert [policy.retry_delay(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert policy.retry_delay(6) == 900 and policy.retry_delay(50) == 900
    assert policy.retry_delay(0) == 30


# ----------------------------------------------------------------------------- object keys
def test_object_key_round_trips_through_parse() -> None:
    # Given a key made for a batch
    key = object_key(C, "qiaotou", "b123", "00001-ct.dcm")
    # When parsed back
    where = parse_object_key(key, C)
    # Then it names the uploader and the batch
    assert (where.consortium_id, where.institution_id, where.batch_id, where.key) == (
        C,
        "qiaotou",
        "b123",
        key,
    )


def test_a_gateway_key_with_sub_folders_parses() -> None:
    where = parse_object_key(f"dicom/{C}/qiaotou/gateway/2026/11/20/a.dcm", C)
    assert (where.institution_id, where.batch_id) == ("qiaotou", "gateway")


@pytest.mark.parametrize(
    "key",
    [
        "dicom/other-county/qiaotou/b1/a.dcm",  # another consortium
        f"dicom/{C}/qiaotou/a.dcm",  # too short: no batch
        f"dicom/{C}/qiaotou",
        f"uploads/{C}/qiaotou/b1/a.dcm",  # not under dicom/
        f"dicom/{C}//b1/a.dcm",  # an empty institution
    ],
)
def test_a_key_outside_the_consortium_prefix_is_wrong_prefix(key: str) -> None:
    with pytest.raises(DicomRejected) as refused:
        parse_object_key(key, C)
    assert refused.value.code == "WRONG_PREFIX"


def test_safe_file_name_keeps_what_a_key_may_hold_and_numbers_it() -> None:
    # Given client names with spaces, Chinese, slashes, nothing at all
    # When reduced / Then only safe characters are left, numbered so none clash
    assert safe_file_name("CT 001.dcm", 3) == "00003-CT_001.dcm"
    assert safe_file_name("../../etc/passwd", 0) == "00000-etc_passwd"
    assert "/" not in safe_file_name("a/b/c", 1)
    assert safe_file_name("", 7) == "00007-file"
    assert safe_file_name("胸部.dcm", 2) == "00002-dcm"
    assert len(safe_file_name("x" * 500, 1)) == 6 + 80


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("1.2.840.10008.1.2.1", True),
        ("0.1", True),
        ("1.2.03", False),  # a leading zero in a component
        ("1..2", False),
        ("1.2.", False),
        ("1.2.abc", False),
        ("", False),
        ("1." + "2" * 63, False),  # 65 characters
        ("1." + "2" * 62, True),  # 64
    ],
)
def test_valid_uid(value: str, ok: bool) -> None:
    assert valid_uid(value) is ok


# ----------------------------------------------------------------------------- QIDO
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("20260101", ("20260101", "20260101")),
        ("20260101-20261231", ("20260101", "20261231")),
        ("-20261231", ("00000000", "20261231")),
        ("20260101-", ("20260101", "99991231")),
        (None, None),
        ("", None),
    ],
)
def test_parse_date_range_takes_the_four_qido_forms(raw: str | None, expected: object) -> None:
    assert parse_date_range(raw) == expected


@pytest.mark.parametrize("raw", ["2026-01-01", "20261231-20260101", "yesterday", "2026010"])
def test_a_bad_date_range_is_refused(raw: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_date_range(raw)
    assert refused.value.code == "DATE_RANGE_INVALID"


def test_parse_modalities_reads_comma_or_backslash_lists() -> None:
    assert parse_modalities("ct, mr") == {"CT", "MR"}
    assert parse_modalities("CT\\DX") == {"CT", "DX"}
    assert parse_modalities(None) == frozenset()
    with pytest.raises(InvalidInput) as refused:
        parse_modalities("CT,X-RAY")
    assert refused.value.code == "MODALITY_INVALID"


# ----------------------------------------------------------------------------- reports
def test_parse_report_reads_a_complete_final_report() -> None:
    draft = parse_report({"findings": " 双肺纹理清晰。 ", "impression": "胸部CT平扫未见异常。"})
    assert draft.findings == "双肺纹理清晰。" and draft.final and not draft.critical


@pytest.mark.parametrize("missing", ["findings", "impression"])
def test_a_report_without_findings_or_impression_is_incomplete(missing: str) -> None:
    body = {"findings": "所见", "impression": "意见", missing: "  "}
    with pytest.raises(InvalidInput) as refused:
        parse_report(body)
    assert (refused.value.code, refused.value.details["field"]) == ("REPORT_INCOMPLETE", missing)


def test_a_too_long_report_field_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_report({"findings": "肺" * 8001, "impression": "意见"})
    assert (refused.value.code, refused.value.details["field"]) == ("REPORT_TOO_LONG", "findings")


@pytest.mark.parametrize(
    "body",
    [
        {"findings": "所见", "impression": "意见", "status": "amended"},
        {"findings": ["所见"], "impression": "意见"},
    ],
)
def test_a_report_with_a_bad_status_or_type_is_invalid(body: dict) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_report(body)
    assert refused.value.code == "REPORT_INVALID"


def test_report_status_goes_preliminary_then_final_then_amended() -> None:
    final = parse_report({"findings": "所见", "impression": "意见"})
    prelim = parse_report({"findings": "所见", "impression": "意见", "status": "preliminary"})
    assert next_report_status(None, prelim) is ReportStatus.PRELIMINARY
    assert next_report_status("preliminary", final) is ReportStatus.FINAL
    assert next_report_status("final", final) is ReportStatus.AMENDED
    assert next_report_status("amended", final) is ReportStatus.AMENDED


def test_a_signed_report_cannot_become_preliminary_again() -> None:
    prelim = parse_report({"findings": "所见", "impression": "意见", "status": "preliminary"})
    for current in ("final", "amended"):
        with pytest.raises(InvalidInput) as refused:
            next_report_status(current, prelim)
        assert refused.value.code == "REPORT_ALREADY_FINAL"


# ----------------------------------------------------------------------------- cloud film
def share(body: dict | None = None, policy: ImagingPolicy = POLICY):  # noqa: ANN201
    return new_share_link(
        study_uid=STUDY_UID, person_id="p-zhangwei", consortium_id=C, created_by="res-zw",
        created_by_name="张伟", body=body or {}, now=NOW, policy=policy,
    )  # fmt: skip


def test_a_new_share_link_lasts_the_default_days_and_stores_only_hashes() -> None:
    # Given a resident sharing without options
    link, token = share()
    # Then it lasts the policy's default, and neither the token nor a code is kept in clear
    assert link.expires_at == (NOW + timedelta(days=POLICY.share_default_days)).isoformat(
        timespec="seconds"
    )
    assert token not in link.token_hash and not link.has_code
    check(link, token, None, NOW)  # opens without a code


@pytest.mark.parametrize("days", [0, 31, -1, "7", True, 1.5])
def test_share_days_outside_the_bounds_are_refused(days: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        share({"days": days})
    assert refused.value.code == "SHARE_DAYS_INVALID"


def test_share_days_at_the_bounds_are_taken() -> None:
    assert share({"days": 1})[0].expires_at < share({"days": 30})[0].expires_at


@pytest.mark.parametrize("code", ["123", "123456789", "12a4", 1234])
def test_an_access_code_is_four_to_eight_digits(code: object) -> None:
    with pytest.raises(InvalidInput) as refused:
        share({"access_code": code})
    assert refused.value.code == "ACCESS_CODE_INVALID"


def test_a_link_with_a_code_needs_the_right_code() -> None:
    # Given a link with access code 2468
    link, token = share({"access_code": "2468", "days": 3})
    assert link.has_code and "2468" not in link.code_hash
    # When opened without, with a wrong and with the right code
    with pytest.raises(Forbidden) as without:
        check(link, token, None, NOW)
    with pytest.raises(Forbidden) as wrong:
        check(link, token, "1357", NOW)
    check(link, token, "2468", NOW)
    # Then the first two are refused with what the film page says
    assert (without.value.code, wrong.value.code) == ("ACCESS_CODE_REQUIRED", "ACCESS_CODE_WRONG")


def test_a_link_locks_after_too_many_wrong_codes_even_for_the_right_one() -> None:
    link, token = share({"access_code": "2468"})
    locked = replace(link, failed_codes=POLICY.share_code_attempts)
    with pytest.raises(Forbidden) as refused:
        check(locked, token, "2468", NOW)
    assert refused.value.code == "SHARE_LOCKED"
    check(replace(link, failed_codes=POLICY.share_code_attempts - 1), token, "2468", NOW)


def test_an_expired_link_is_gone() -> None:
    link, token = share({"days": 2})
    check(link, token, None, NOW + timedelta(days=2, seconds=-1))
    with pytest.raises(Gone) as refused:
        check(link, token, None, NOW + timedelta(days=2))
    assert refused.value.code == "SHARE_EXPIRED"


def test_a_revoked_link_is_gone_before_anything_else() -> None:
    link, token = share({"access_code": "2468"})
    revoked = replace(link, revoked_at=NOW.isoformat())
    with pytest.raises(Gone) as refused:
        check(revoked, token, None, NOW)
    assert refused.value.code == "SHARE_REVOKED"


def test_a_code_made_for_one_token_does_not_open_another_link() -> None:
    link, _ = share({"access_code": "2468"})
    _, other_token = share({"access_code": "2468"})
    with pytest.raises(Forbidden) as refused:
        check(link, other_token, "2468", NOW)
    assert refused.value.code == "ACCESS_CODE_WRONG"


# ----------------------------------------------------------------------------- patients
def test_a_dicom_patient_registers_as_the_master_index_reads_it() -> None:
    patient = DicomPatient("P0001", "张三", "M", "19700102", "430725197001010014")
    reg = patient.registration("qiaotou")
    assert reg == {
        "name": "张三",
        "sex": "male",
        "birth_date": "1970-01-02",
        "identifiers": [
            {"type": "local", "value": "P0001", "assigner": "qiaotou"},
            {"type": "id_card", "value": "430725197001010014"},
        ],
    }


def test_a_patient_without_ids_or_a_full_date_registers_what_it_has() -> None:
    reg = DicomPatient(name="李四", sex="F", birth_date="1970").registration("qiaotou")
    assert (reg["sex"], reg["birth_date"], reg["identifiers"]) == ("female", "1970", [])


def test_mask_id_card_keeps_only_the_ends() -> None:
    assert mask("430725197001010014") == "4307**********0014"
    assert mask("12345678") == "****"


# ----------------------------------------------------------------------------- the record
STUDY = {
    "study_uid": STUDY_UID, "date": "20261120", "time": "093000", "description": "胸部CT平扫",
    "accession": "A20261120", "modalities": ["CT"],
}  # fmt: skip
SERIES = [
    {"series_uid": STUDY_UID + ".1", "number": 1, "modality": "CT", "instance_count": 3,
     "description": "Chest 1.25mm"},
    {"series_uid": STUDY_UID + ".2", "number": 2, "modality": "CT", "instance_count": 2},
]  # fmt: skip
REPORT = {
    "status": "final", "findings": "双肺纹理清晰。", "impression": "未见异常。",
    "technique": "胸部CT平扫", "recommendation": "", "signed_by_name": "黄涛",
    "institution_id": "county-hospital", "signed_at": "2026-11-20T10:00:00+08:00",
}  # fmt: skip


def test_report_bundle_is_valid_fhir_r4b_with_the_study_and_the_report() -> None:
    from fhir.resources.R4B.bundle import Bundle

    # Given a final report on a two-series study
    bundle = report_bundle(STUDY, SERIES, REPORT, "p-zhangwei")
    # When fhir.resources reads it
    parsed = Bundle.model_validate(bundle)
    # Then it is a transaction of the ImagingStudy and the DiagnosticReport reading it
    study, report = (e.resource for e in parsed.entry)
    assert parsed.type == "transaction"
    assert (study.numberOfSeries, study.numberOfInstances) == (2, 5)
    assert study.started.isoformat() == "2026-11-20T09:30:00+08:00"
    assert report.status == "final" and report.conclusion == "未见异常。"
    assert report.imagingStudy[0].reference == bundle["entry"][0]["fullUrl"]
    text = base64.b64decode(bundle["entry"][1]["resource"]["presentedForm"][0]["data"]).decode()
    assert "检查所见：双肺纹理清晰。" in text and "建议" not in text


def test_report_bundle_passes_the_records_checks_as_an_imaging_document() -> None:
    # Given the bundle of a final report
    bundle = report_bundle(STUDY, SERIES, REPORT, "p-zhangwei")
    # When the health record's own pre-checks, FHIR validation and rules read it
    precheck(bundle)
    validate_bundle(bundle)
    doc = read_document(bundle, "county-hospital", NOW)
    # Then it is an exam report (WS/T 500.6 检查报告) of the person, at the study's time
    assert doc.subject.person_id == "p-zhangwei"
    assert doc.kind is Kind.EXAM_REPORT
    assert doc.effective.startswith("2026-11-20")


def test_an_amended_report_keeps_the_document_identifier() -> None:
    first = report_bundle(STUDY, SERIES, REPORT, "p-zhangwei")
    amended = report_bundle(STUDY, SERIES, {**REPORT, "status": "amended"}, "p-zhangwei")
    assert first["identifier"] == amended["identifier"]
    assert amended["entry"][1]["resource"]["status"] == "amended"


def test_a_study_without_a_date_or_modalities_still_makes_valid_fhir() -> None:
    from fhir.resources.R4B.bundle import Bundle

    bare = {"study_uid": STUDY_UID}
    bundle = report_bundle(bare, [], REPORT, "p-zhangwei")
    Bundle.model_validate(bundle)
    assert bundle["entry"][0]["resource"]["started"] == REPORT["signed_at"]
    assert bundle["entry"][0]["resource"]["modality"][0]["code"] == "OT"
