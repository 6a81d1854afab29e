"""Match scoring and outcomes on demographics, identifiers and blocking."""

import itertools

import pytest

from yilian.domain.identity import IdentifierType
from yilian.domain.matching import (
    W_ADDRESS,
    W_BIRTH,
    W_NAME,
    W_PHONE,
    W_SEX,
    Candidate,
    IdKey,
    Outcome,
    birth_agreement,
    contradicts,
    decide,
    name_agreement,
    normalise_address,
    score,
)
from yilian.domain.names import name_pinyin

MATCH, REVIEW = 0.92, 0.70
ADDRESS = normalise_address("示范县桥头镇李家村12号")


def person(
    name: str = "王丽",
    birth: str = "1985-03-12",
    sex: str = "female",
    phone: str | None = "ph1",
    address: str = ADDRESS,
    pid: str = "p1",
    ids: tuple[IdKey, ...] = (),
) -> Candidate:
    return Candidate(pid, name, name_pinyin(name), sex, birth, phone, address, ids)


def record(**kw) -> Candidate:
    return person(pid="", **kw)


ID_A = IdKey(IdentifierType.ID_CARD, "hash-a")
ID_B = IdKey(IdentifierType.ID_CARD, "hash-b")


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("王丽", "王丽", "exact"),
        ("王丽", "王莉", "homophone"),
        ("张振", "臧震", "fuzzy"),
        ("王芳", "王明", "partial"),
        ("张小明", "张明", "partial"),
        ("王芳", "李明", "none"),
    ],
)
def test_name_agreement_levels(a, b, level):
    assert name_agreement(record(name=a), person(name=b)) == level


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("1985-03-12", "1985-03-12", "exact"),
        ("1985-03-12", "1985-12-03", "transposed"),
        ("1985-03-12", "1986-03-12", "one_digit"),
        ("1985-03-12", "1985-03-13", "one_digit"),
        ("1985-03-12", "1979-08-30", "different"),
    ],
)
def test_birth_date_agreement_levels(a, b, level):
    assert birth_agreement(a, b) == level


def test_the_same_demographics_everywhere_is_a_match():
    # Given a record identical to a person in name, birth date, sex, phone and address
    s = score(record(), person())
    # Then it scores 1.0 with every part in the breakdown
    assert s.score == 1.0
    assert set(s.breakdown) == {"name", "birth_date", "sex", "phone", "address"}


def test_a_homophone_name_with_everything_else_equal_is_still_a_match():
    d = decide(record(name="王莉"), [person()], MATCH, REVIEW)
    assert (d.outcome, d.person_id) == (Outcome.MATCH, "p1")
    assert d.score == pytest.approx(0.95)


def test_a_transposed_birth_date_goes_to_review():
    d = decide(record(birth="1985-12-03"), [person()], MATCH, REVIEW)
    assert d.outcome is Outcome.POSSIBLE_MATCH
    assert d.candidates[0].person_id == "p1"
    assert d.candidates[0].breakdown["birth_date"] == W_BIRTH["transposed"]


def test_same_name_and_birth_date_alone_is_only_possible():
    # Namesakes born the same day exist (张伟 is common): without a phone or address it is
    # a question for a person, never an automatic link
    d = decide(record(phone=None, address=""), [person()], MATCH, REVIEW)
    assert d.outcome is Outcome.POSSIBLE_MATCH


def test_a_different_sex_weighs_heavily_against():
    d = decide(record(sex="male"), [person()], MATCH, REVIEW)
    assert d.outcome is Outcome.NO_MATCH


def test_a_conflicting_id_card_weighs_heavily_against():
    # Given the same demographics but two different ID numbers
    d = decide(record(ids=(ID_A,)), [person(ids=(ID_B,))], MATCH, REVIEW)
    # Then they are two people
    assert d.outcome is Outcome.NO_MATCH
    assert score(record(ids=(ID_A,)), person(ids=(ID_B,))).breakdown["conflict.id_card"] < -0.5


def test_a_different_local_number_at_the_same_institution_weighs_little():
    mine = IdKey(IdentifierType.LOCAL, "h1", "qiaotou")
    theirs = IdKey(IdentifierType.LOCAL, "h2", "qiaotou")
    elsewhere = IdKey(IdentifierType.LOCAL, "h3", "shimen")
    assert score(record(ids=(mine,)), person(ids=(theirs,))).breakdown["conflict.local"] == -0.1
    assert "conflict.local" not in score(record(ids=(mine,)), person(ids=(elsewhere,))).breakdown


def test_two_persons_above_the_match_threshold_make_a_review_not_a_guess():
    d = decide(record(), [person(pid="p1"), person(pid="p2")], MATCH, REVIEW)
    assert d.outcome is Outcome.POSSIBLE_MATCH
    assert {c.person_id for c in d.candidates} == {"p1", "p2"}


def test_nobody_alike_is_no_match():
    d = decide(record(), [person(name="李强", birth="1960-01-01", sex="male", phone="x")],
               MATCH, REVIEW)  # fmt: skip
    assert (d.outcome, d.candidates) == (Outcome.NO_MATCH, ())


def test_an_identifier_hit_is_refused_when_the_record_contradicts_it():
    # A national identifier of the same kind disagrees
    assert contradicts(record(ids=(ID_A,)), person(ids=(ID_B,))) == "conflicting id_card"
    # Neither name nor birth date agrees at all: a mistyped number, not this person
    assert contradicts(record(name="李强", birth="1960-01-01"), person()) is not None
    # A homophone name with another birth date is still plausibly the same person
    assert contradicts(record(name="王莉", birth="1990-01-01"), person()) is None


def test_the_blocks_lose_no_pair_that_can_reach_review():
    # A pair shares a block when the names share a fuzzy key (levels exact, homophone,
    # fuzzy) or the birth dates are identical. Every other combination must stay below
    # the review threshold, whatever phone and address say.
    outside = [
        (n, b)
        for n, b in itertools.product(W_NAME, W_BIRTH)
        if n not in ("exact", "homophone", "fuzzy") and b != "exact"
    ]
    best = max(W_NAME[n] + W_BIRTH[b] for n, b in outside) + W_SEX["same"] + W_PHONE + W_ADDRESS
    assert best < REVIEW
