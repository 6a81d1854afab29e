"""Bulk registration: row outcomes, reports, re-runs, jobs and who may run them."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta

import pytest

from tests.fakes import (
    CONSORTIUM,
    FakeAuditSink,
    FakeDirectory,
    FakeImportFiles,
    FakeImportJobs,
    FakePersonsStore,
    FakeProtector,
    make_id_number,
    registration,
)
from yilian.domain.clock import CHINA_TZ
from yilian.domain.errors import DomainError
from yilian.domain.principal import Principal, Role
from yilian.services.bulk_import import BulkImporter
from yilian.services.empi import EmpiService

CLERK = Principal("doc-qiaotouadmin", Role.INSTITUTION_ADMIN, CONSORTIUM, "qiaotou")
DOCTOR_ELSEWHERE = Principal("doc-zhanghong", Role.DOCTOR, CONSORTIUM, "county-hospital")
ADMIN = Principal("doc-admin", Role.CONSORTIUM_ADMIN, CONSORTIUM, "county-hospital")
HEADER = ["门诊号", "姓名", "性别", "出生日期", "身份证号", "联系电话", "现住址"]


def clock():
    t = [datetime(2026, 6, 1, 9, 0, tzinfo=CHINA_TZ)]

    def now() -> datetime:
        t[0] += timedelta(milliseconds=1)
        return t[0]

    return now


@pytest.fixture
def store() -> FakePersonsStore:
    return FakePersonsStore()


@pytest.fixture
def files() -> FakeImportFiles:
    return FakeImportFiles()


@pytest.fixture
def audit() -> FakeAuditSink:
    return FakeAuditSink()


@pytest.fixture
def empi(store, audit) -> EmpiService:
    return EmpiService(
        store, FakeProtector(), FakeDirectory.demo(), audit, now=clock(), sleep=lambda s: None
    )


@pytest.fixture
def importer(empi, files) -> BulkImporter:
    return BulkImporter(empi, files, FakeImportJobs(), now=clock(), sleep=lambda s: None)


def row(local, name, sex, birth, seq=1, id_card=True, phone="13905710000", address="桥头镇中街"):
    number = make_id_number(birth, sex, seq) if id_card is True else (id_card or "")
    return [local, name, "男" if sex == "male" else "女", birth, number, phone, address]


def csv_text(rows) -> str:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(HEADER)
    w.writerows(rows)
    return out.getvalue()


def report(files: FakeImportFiles, job: dict) -> list[dict[str, str]]:
    body = files.objects[job["report"]["key"]].decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(body)))


PATIENTS = [
    row("Q0001", "王丽", "female", "1990-07-15", seq=1),
    row("Q0002", "张伟", "male", "1985-03-12", seq=2),
    row("Q0003", "李秀英", "female", "1952-11-30", seq=3, id_card=None),
    row("Q0004", "陈明", "male", "2001-01-09", seq=4),
]


def test_a_patient_list_is_registered_and_reported(importer, files, store, audit):
    # Given a township centre's patient list exported with Chinese headers
    # When it is imported inline
    status, out = importer.start(CLERK, "csv", content=csv_text(PATIENTS))
    job = out["job"]
    # Then every row is a new person, and the report says so row by row
    assert status == 201 and job["status"] == "done"
    assert job["counts"] == {"total": 4, "matched": 0, "new": 4, "review": 0, "rejected": 0}
    lines = report(files, job)
    assert [r["row"] for r in lines] == ["2", "3", "4", "5"]  # spreadsheet row numbers
    assert all(r["outcome"] == "new" and r["person_id"] in store.persons for r in lines)
    assert lines[0]["local_id"] == "Q**01"  # masked, as everywhere
    # and each person holds the centre's patient number
    assert all(any(i.assigner == "qiaotou" for i in p.identifiers) for p in store.persons.values())
    assert audit.events[-1].what == "Person.bulk_import"
    assert store.fences == {}  # the write fence was released


def test_running_the_same_file_again_is_harmless(importer, files, store):
    importer.start(CLERK, "csv", content=csv_text(PATIENTS))
    items, persons = store.item_count(), dict(store.persons)
    # When the same list is imported again (a new job)
    _, out = importer.start(CLERK, "csv", content=csv_text(PATIENTS))
    # Then every row matches the person it made the first time, and nothing is written
    assert out["job"]["counts"]["matched"] == 4
    first = {r["person_id"] for r in report(files, out["job"])}
    assert first == set(persons)
    assert (store.item_count(), store.persons) == (items, persons)


def test_rows_end_matched_queued_or_rejected_with_their_reason(empi, importer, files, store):
    # Given a resident already registered by her village clinic, and another woman
    status, body = empi.register(CLERK, registration("王丽", "female", "1990-07-15", seq=1))
    known = body["person"]["person_id"]
    empi.register(CLERK, registration("赵敏", "female", "1988-06-04", id_card=None,
                                      local=("V77", "qiaotou-lijia"), phone="13905710000",
                                      address="桥头镇中街"))  # fmt: skip
    bad_check = make_id_number("1985-03-12", "male", 2)
    bad_check = bad_check[:17] + ("1" if bad_check[17] != "1" else "2")
    rows = [
        row("Q0001", "王丽", "female", "1990-07-15", seq=1),  # her ID card: matched
        row("Q0002", "赵敏", "female", "1988-04-06", id_card=None),  # transposed: review
        row("Q0003", "张伟", "male", "1985-03-12", id_card=bad_check),
        row("", "李强", "male", "1970-01-01", seq=5),  # no patient number
        row("Q0005", "", "male", "1970-01-01", seq=5),  # no name
        row("Q0006", "陈明", "male", "2031-01-01", id_card=None),  # born in the future
        row("Q0007", "孙丽", "female", "1975-05-05", seq=6),  # a new person
        row("Q0008", "孙丽", "female", "1975-05-05", seq=6),  # her again, new chart: matched
    ]
    _, out = importer.start(CLERK, "csv", content=csv_text(rows))
    lines = {int(r["row"]): r for r in report(files, out["job"])}
    assert (lines[2]["outcome"], lines[2]["person_id"]) == ("matched", known)
    assert lines[3]["outcome"] == "review" and lines[3]["candidates"]
    assert (lines[4]["outcome"], lines[4]["reason"]) == ("rejected", "ID_CHECK_DIGIT")
    assert (lines[5]["outcome"], lines[5]["reason"]) == ("rejected", "LOCAL_ID_REQUIRED")
    assert (lines[6]["outcome"], lines[6]["reason"]) == ("rejected", "NAME_REQUIRED:name")
    assert lines[7]["reason"] == "BIRTH_DATE_IN_FUTURE:birth_date"
    assert lines[8]["outcome"] == "new"
    assert (lines[9]["outcome"], lines[9]["person_id"]) == ("matched", lines[8]["person_id"])
    assert out["job"]["counts"] == {
        "total": 8, "matched": 2, "new": 1, "review": 1, "rejected": 4,
    }  # fmt: skip
    # the matched resident now holds the centre's number too, with the score in her history
    assert {i.assigner for i in store.persons[known].identifiers} >= {"qiaotou-lijia", "qiaotou"}
    assert store.histories[known][-1].action == "identifiers_attached"
    # the second chart of 孙丽 went onto the person her first row created
    sun = store.persons[lines[8]["person_id"]]
    assert sorted(i.masked for i in sun.identifiers if i.assigner) == ["Q**07", "Q**08"]
    assert len(store.open_reviews(CONSORTIUM)) == 1


def test_chunks_see_the_rows_before_them(empi, files, store):
    # Given chunks of two rows
    small = BulkImporter(empi, files, FakeImportJobs(), chunk_size=2, sleep=lambda s: None)
    rows = [dict(zip(("local_id", "name", "sex", "birth_date", "id_card"), r[:5], strict=True))
            for r in PATIENTS + [row("Q0009", "王丽", "female", "1990-07-15", seq=1)]]  # fmt: skip
    result = small.import_rows(CLERK, "qiaotou", rows)
    # Then the repeated patient in the third chunk matches the person of the first
    assert [r.outcome for r in result.rows] == ["new"] * 4 + ["matched"]
    assert result.rows[4].person_id == result.rows[0].person_id
    # and new persons went out in batches, not transactions
    assert result.requests["BatchWriteItem"] >= 3 and result.requests["TransactWriteItems"] == 0
    assert result.items_written > 0 and result.counts["new"] == 4


def test_a_match_outside_the_chunks_blocks_keeps_that_blocks_other_members(empi, importer, store):
    # Given two women of the same name and birthday, one of them with an ID card
    _, a = empi.register(CLERK, registration("王丽", "female", "1990-07-15", seq=1, local=None))
    other = registration(
        "王丽", "female", "1990-07-15", id_card=None, local=("V1", "qiaotou-lijia")
    )
    _, b = empi.register(CLERK, {**other, "phone": "13700000000"})
    a_id, b_id = a["person"]["person_id"], b["person"]["person_id"]
    # When a row carries her ID card under another spelling of the name and a typo'd birthday
    number = make_id_number("1990-07-15", "female", 1)
    rows = [{"local_id": "Q1", "name": "王莉莉", "sex": "女", "birth_date": "1990-07-16",
             "id_card": number}]  # fmt: skip
    result = importer.import_rows(CLERK, "qiaotou", rows)
    assert result.rows[0].outcome == "rejected"  # the ID card's birth date disagrees
    rows[0]["birth_date"] = "1990-07-15"
    result = importer.import_rows(CLERK, "qiaotou", rows)
    # Then it matches her, and her name block still holds the other 王丽
    assert (result.rows[0].outcome, result.rows[0].person_id) == ("matched", a_id)
    name_block = store.persons[a_id].block_keys()[0]
    assert set(store.heads[(CONSORTIUM, name_block)]) == {a_id, b_id}


def test_json_lines_with_a_broken_line(importer, files):
    lines = [
        json.dumps({"local_id": "J1", "name": "王丽", "sex": "female", "birth_date": "1990-07-15"}),
        "{not json",
        json.dumps(["a", "list"]),
    ]
    _, out = importer.start(CLERK, "jsonl", content="\n".join(lines))
    outcomes = [(r["outcome"], r["reason"]) for r in report(files, out["job"])]
    assert outcomes == [("new", ""), ("rejected", "MALFORMED_ROW"), ("rejected", "MALFORMED_ROW")]


def test_an_uploaded_file_runs_once_when_it_lands(importer, files):
    # Given a job waiting for its upload
    status, out = importer.start(CLERK, "csv")
    assert status == 202 and out["job"]["status"] == "awaiting_upload"
    key = out["upload"]["key"]
    assert key == f"imports/{CONSORTIUM}/qiaotou/{out['job']['job_id']}.csv"
    assert out["upload"]["method"] == "PUT" and "X-Amz-Expires" in out["upload"]["url"]
    # When the file lands in the bucket, in GBK as Excel saves it
    files.objects[key] = csv_text(PATIENTS).encode("gb18030")
    done = importer.run_uploaded(key)
    # Then the job runs; a second delivery of the event changes nothing
    assert done.status == "done" and done.counts["new"] == 4
    assert importer.run_uploaded(key) == done
    assert importer.run_uploaded("imports/elsewhere/qiaotou/0123456789abcdef.csv") is None
    assert importer.run_uploaded("uploads/whatever.csv") is None
    view = importer.status(CLERK, done.job_id)["job"]
    assert view["status"] == "done" and "X-Amz-Expires" in view["report"]["url"]


def test_who_may_import_and_see_a_job(importer):
    resident = Principal("resident-1", Role.RESIDENT, CONSORTIUM, person_id="p1")

    def code(fn, *args, **kwargs):
        with pytest.raises(DomainError) as exc:
            fn(*args, **kwargs)
        return exc.value.code

    assert code(importer.start, resident, "csv") == "ROLE_NOT_ALLOWED"
    assert code(importer.start, CLERK, "csv", "shimen") == "NOT_YOUR_INSTITUTION"
    assert code(importer.start, ADMIN, "csv") == "INSTITUTION_REQUIRED"
    assert code(importer.start, ADMIN, "csv", "no-such-clinic") == "UNKNOWN_INSTITUTION"
    assert code(importer.start, CLERK, "xlsx") == "FORMAT_INVALID"
    _, out = importer.start(ADMIN, "csv", "qiaotou")
    job_id = out["job"]["job_id"]
    assert importer.status(CLERK, job_id)["job"]["institution_id"] == "qiaotou"
    assert code(importer.status, DOCTOR_ELSEWHERE, job_id) == "NOT_YOUR_INSTITUTION"
    assert code(importer.status, resident, job_id) == "ROLE_NOT_ALLOWED"
    assert code(importer.status, CLERK, "0000000000000000") == "IMPORT_NOT_FOUND"


def test_an_import_waits_for_another_jobs_fence(empi, files, store):
    # Given another job holding the write fence for five more seconds
    now = [1_000.0]
    store._clock = lambda: now[0]
    store.acquire_fence(CONSORTIUM, "other-job", lease_seconds=5)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    importer = BulkImporter(empi, files, FakeImportJobs(), sleep=sleep)
    rows = [{"local_id": "Q1", "name": "王丽", "sex": "female", "birth_date": "1990-07-15"}]
    # When an import starts, it waits its turn, then runs
    result = importer.import_rows(CLERK, "qiaotou", rows)
    assert result.rows[0].outcome == "new" and now[0] >= 1_005.0


def test_a_job_that_cannot_get_the_fence_fails_and_can_run_again(empi, files, store):
    # Given another job that holds the fence far longer than this one waits
    now = [1_000.0]
    store._clock = lambda: now[0]
    store.acquire_fence(CONSORTIUM, "stuck-job", lease_seconds=3600)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    jobs = FakeImportJobs()
    importer = BulkImporter(empi, files, jobs, fence_wait_seconds=5, sleep=sleep)
    _, out = importer.start(CLERK, "csv")
    key = out["upload"]["key"]
    files.objects[key] = csv_text(PATIENTS).encode()
    # When its file lands, it gives up waiting: the job is failed (not stuck running)
    with pytest.raises(DomainError):
        importer.run_uploaded(key)
    job = importer.status(CLERK, out["job"]["job_id"])["job"]
    assert (job["status"], job["error"]) == ("failed", "IMPORT_IN_PROGRESS")
    # and once the other job is gone, the event's retry runs it
    store.fences.clear()
    assert importer.run_uploaded(key).status == "done"
