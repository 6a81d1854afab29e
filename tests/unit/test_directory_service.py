import time

import pytest

from tests.support.fake_directory import FakeDirectoryStore
from tests.support.rsa_signer import RsaSigner
from yilian.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from yilian.domain.principal import Principal, Role
from yilian.services.directory import DirectoryService
from yilian.services.sign_in import SignInService
from yilian.services.tokens import TokenIssuer, TokenVerifier

C = "demo-county"
ADMIN = Principal("adm", Role.CONSORTIUM_ADMIN, C)
COUNTY = {"institution_id": "county-hospital", "name": "示范县人民医院", "type": "general_hospital"}
TOWNSHIP = {
    "institution_id": "qiaotou",
    "name": "桥头镇卫生院",
    "type": "township_health_centre",
    "parent_id": "county-hospital",
}


@pytest.fixture
def svc():
    store = FakeDirectoryStore()
    service = DirectoryService(store)
    service.create_institution(ADMIN, COUNTY)
    service.create_institution(ADMIN, TOWNSHIP)
    return service, store


def test_type_fixes_the_tier_and_parent_must_be_higher(svc):
    service, store = svc
    # Given a village clinic whose parent is a township centre
    village = service.create_institution(
        ADMIN, {"name": "李家村卫生室", "type": "village_clinic", "parent_id": "qiaotou"}
    )
    assert village.tier == "village"
    # When a county hospital is declared under the village clinic
    with pytest.raises(InvalidInput) as exc:
        service.create_institution(
            ADMIN, {"name": "X", "type": "tcm_hospital", "parent_id": village.institution_id}
        )
    # Then it is refused and nothing is stored
    assert exc.value.code == "PARENT_TIER"
    assert len(store.institutions) == 3


def test_tier_contradicting_type_and_unknown_parent_are_refused(svc):
    service, store = svc
    with pytest.raises(InvalidInput) as exc:
        service.create_institution(ADMIN, {"name": "Y", "type": "village_clinic", "tier": "county"})
    assert exc.value.code == "TIER_TYPE_MISMATCH"
    with pytest.raises(InvalidInput) as exc:
        service.create_institution(
            ADMIN, {"name": "Y", "type": "village_clinic", "parent_id": "nowhere"}
        )
    assert exc.value.code == "UNKNOWN_PARENT"
    assert len(store.institutions) == 2


def test_only_consortium_admin_adds_institutions(svc):
    service, store = svc
    doctor = Principal("d", Role.DOCTOR, C, institution_id="qiaotou")
    with pytest.raises(Forbidden):
        service.create_institution(doctor, {"name": "Z", "type": "village_clinic"})
    assert len(store.institutions) == 2


def test_duplicate_institution_id_conflicts(svc):
    service, _ = svc
    with pytest.raises(Conflict):
        service.create_institution(ADMIN, COUNTY)


def test_institution_admin_manages_own_doctors_only(svc):
    service, store = svc
    own_admin = Principal("ia", Role.INSTITUTION_ADMIN, C, institution_id="qiaotou")
    doc = service.create_doctor(
        own_admin, {"institution_id": "qiaotou", "name": "王芳", "department": "全科"}
    )
    assert doc.role == "doctor"
    with pytest.raises(Forbidden):
        service.create_doctor(
            own_admin, {"institution_id": "county-hospital", "name": "X", "department": "内科"}
        )
    with pytest.raises(Forbidden) as exc:
        service.create_doctor(
            own_admin,
            {
                "institution_id": "qiaotou",
                "name": "X",
                "department": "全科",
                "role": "consortium_admin",
            },
        )
    assert exc.value.code == "ROLE_NOT_ASSIGNABLE"
    assert len(store.doctors) == 1


def test_resident_sees_directory_without_private_fields(svc):
    service, _ = svc
    service.create_doctor(
        ADMIN,
        {"institution_id": "qiaotou", "name": "王芳", "department": "全科", "phone": "13800000000"},
    )
    resident = Principal("r", Role.RESIDENT, C, person_id="p1")
    [doctor] = service.list_doctors(resident, "qiaotou")
    assert "phone" not in doctor and doctor["name"] == "王芳"
    assert service.list_institutions(resident, "township")[0].institution_id == "qiaotou"


def test_other_consortium_sees_nothing(svc):
    service, _ = svc
    stranger = Principal("s", Role.CONSORTIUM_ADMIN, "other-county")
    assert service.list_institutions(stranger) == []
    with pytest.raises(NotFound):
        service.get_institution(stranger, "qiaotou")


def test_sign_in_issues_a_verifiable_token_and_hides_which_part_was_wrong(svc):
    service, store = svc
    service.create_doctor(
        ADMIN,
        {
            "institution_id": "qiaotou",
            "name": "王芳",
            "department": "全科",
            "username": "wangfang",
            "password": "correct-horse-1",
        },
    )
    signer = RsaSigner()
    sign_in = SignInService(store, TokenIssuer(signer, "iss", "yilian", time.time))
    verifier = TokenVerifier({"iss": signer.jwks}, "yilian", frozenset({C}))
    # When the doctor signs in
    result = sign_in.sign_in("WangFang", "correct-horse-1")
    # Then the token names her role, consortium and institution
    who = verifier.verify(result["access_token"])
    assert (who.role, who.consortium_id, who.institution_id) == (Role.DOCTOR, C, "qiaotou")
    assert result["user"]["institution_name"] == "桥头镇卫生院"
    for user, password in [("wangfang", "wrong-password"), ("nobody", "correct-horse-1")]:
        with pytest.raises(Unauthenticated) as exc:
            sign_in.sign_in(user, password)
        assert exc.value.code == "BAD_CREDENTIALS"


def test_weak_password_and_taken_username_store_nothing(svc):
    service, store = svc
    base = {"institution_id": "qiaotou", "name": "王芳", "department": "全科"}
    with pytest.raises(InvalidInput) as exc:
        service.create_doctor(ADMIN, {**base, "username": "wf", "password": "short"})
    assert exc.value.code in {"WEAK_PASSWORD", "INVALID_USERNAME"}
    service.create_doctor(ADMIN, {**base, "username": "wangfang", "password": "long-enough-1"})
    with pytest.raises(Conflict) as exc:
        service.create_doctor(ADMIN, {**base, "username": "wangfang", "password": "long-enough-2"})
    assert exc.value.code == "USERNAME_TAKEN"
    assert len(store.doctors) == 1
