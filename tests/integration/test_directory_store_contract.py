"""One contract, two implementations: the in-memory fake and the DynamoDB adapter behave alike."""

import pytest

from tests.support.fake_directory import FakeDirectoryStore
from yilian.domain.directory import Doctor, Institution, InstitutionType, Tier
from yilian.domain.errors import Conflict

C = "demo-county"
INST = Institution(
    "qiaotou", C, "桥头镇卫生院", Tier.TOWNSHIP, InstitutionType.TOWNSHIP_HEALTH_CENTRE
)


@pytest.fixture(params=["fake", "dynamodb"])
def store(request, monkeypatch):
    if request.param == "fake":
        yield FakeDirectoryStore()
        return
    from moto import mock_aws

    monkeypatch.setenv("AWS_DEFAULT_REGION", "cn-northwest-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        import boto3

        from tests.support.template_tables import create_tables
        from yilian.adapters.directory_store import DirectoryStore

        names = create_tables(boto3.client("dynamodb"))
        yield DirectoryStore(names["DirectoryTable"], region="cn-northwest-1")


def test_institution_round_trip_and_listing_by_tier(store):
    store.add_institution(INST)
    assert store.get_institution(C, "qiaotou") == INST
    assert store.get_institution("other", "qiaotou") is None
    assert store.list_institutions(C, Tier.TOWNSHIP) == [INST]
    assert store.list_institutions(C, Tier.VILLAGE) == []
    with pytest.raises(Conflict):
        store.add_institution(INST)


def test_doctor_and_account_are_written_together_or_not_at_all(store):
    store.add_institution(INST)
    doc = Doctor("d1", C, "qiaotou", "王芳", "全科", "主治医师", username="wangfang")
    store.add_doctor(doc, "scrypt$hash")
    assert store.get_doctor(C, "d1") == doc
    assert store.get_account("wangfang")["doctor_id"] == "d1"
    assert store.list_doctors(C, "qiaotou") == [doc]
    # A second doctor with the same username: refused, and the doctor is not stored either
    twin = Doctor("d2", C, "qiaotou", "王芳", "全科", "主治医师", username="wangfang")
    with pytest.raises(Conflict) as exc:
        store.add_doctor(twin, "scrypt$other")
    assert exc.value.code == "USERNAME_TAKEN"
    assert store.get_doctor(C, "d2") is None
    assert store.get_account("wangfang")["doctor_id"] == "d1"
