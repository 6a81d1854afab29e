"""Record matching for the patient index: deterministic on strong identifiers, scored on
demographics, and blocking keys that make finding candidates cheap.

Deterministic: a record whose ID card, health card, insurance number or local number
(with its institution) is already held by a person IS that person, unless a national
identifier of the same kind contradicts it or the demographics contradict it entirely.

Scored (weights add up to 1.0 for a perfect demographic agreement):

    name        identical 0.35 | same pinyin (homophone) 0.30 | same fuzzy pinyin 0.26
                | one syllable differs 0.14 | else 0
    birth date  identical 0.30 | day and month transposed 0.20 | one digit differs 0.18
                | else -0.10
    sex         same 0.10 | different -0.30
    phone       same 0.15 (a different phone is no evidence: phones change)
    address     0.10 x character-bigram overlap (Dice)
    identifiers a national identifier of the same kind with a different value:
                ID card -0.60, health card / insurance -0.40; a different local number at
                the same institution -0.10 (duplicate charts happen)

The total, clipped to 0..1, is compared with Settings.match_threshold (auto-link) and
Settings.review_threshold (review queue).

Blocking: every active person is filed under two blocks — its fuzzy-pinyin name and its
exact birth date. A pair can reach the default review threshold (0.70) only if the names
share a fuzzy key or the birth dates are identical: without both, the best possible score
is 0.14 + 0.20 + 0.10 + 0.15 + 0.10 = 0.69. So the two blocks lose no pair that matters
(test_matching.py checks the bound), as long as review_threshold stays above 0.69.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from yilian.domain.identity import IdentifierType
from yilian.domain.names import fuzzy_syllable


class Outcome(StrEnum):
    MATCH = "MATCH"
    POSSIBLE_MATCH = "POSSIBLE_MATCH"
    NO_MATCH = "NO_MATCH"


W_NAME = {"exact": 0.35, "homophone": 0.30, "fuzzy": 0.26, "partial": 0.14, "none": 0.0}
W_BIRTH = {"exact": 0.30, "transposed": 0.20, "one_digit": 0.18, "different": -0.10}
W_SEX = {"same": 0.10, "different": -0.30}
W_PHONE = 0.15
W_ADDRESS = 0.10
CONFLICT_PENALTY = {
    IdentifierType.ID_CARD: -0.60,
    IdentifierType.HEALTH_CARD: -0.40,
    IdentifierType.INSURANCE: -0.40,
    IdentifierType.LOCAL: -0.10,
}
MAX_CANDIDATES = 5


@dataclass(frozen=True, slots=True)
class IdKey:
    """One identifier as the index knows it: kind, assigner (local numbers) and blind index."""

    type: IdentifierType
    hash: str
    assigner: str = ""

    @property
    def key(self) -> str:
        """Unique within a consortium: the uniqueness item's key suffix."""
        return f"{self.type}#{self.hash}"


@dataclass(frozen=True, slots=True)
class Candidate:
    """What scoring needs to know of a person (or of an incoming record): the projection
    stored with the person's blocking keys, so candidates cost no extra read."""

    person_id: str
    name: str
    pinyin: tuple[str, ...]
    sex: str
    birth_date: str  # YYYY-MM-DD
    phone: str | None = None  # blind index of the phone number
    address: str = ""
    ids: tuple[IdKey, ...] = ()
    distinct_from: frozenset[str] = frozenset()  # manual "not a match" decisions

    @classmethod
    def project(
        cls,
        person_id: str,
        record: Any,
        distinct_from: Iterable[str] = (),
    ) -> Candidate:
        """The projection of a person or an incoming record (anything with name, pinyin,
        sex, birth_date, phone_hash, address and identifiers carrying id_key)."""
        return cls(
            person_id=person_id,
            name=record.name,
            pinyin=record.pinyin,
            sex=record.sex,
            birth_date=record.birth_date,
            phone=record.phone_hash,
            address=normalise_address(record.address)[:60],
            ids=tuple(i.id_key for i in record.identifiers),
            distinct_from=frozenset(distinct_from),
        )

    @property
    def fuzzy(self) -> str:
        return "-".join(fuzzy_syllable(s) for s in self.pinyin)

    def block_keys(self) -> tuple[str, str]:
        return name_block(self.pinyin), birth_block(self.birth_date)


def name_block(pinyin: tuple[str, ...]) -> str:
    return "N#" + "-".join(fuzzy_syllable(s) for s in pinyin)


def birth_block(birth_date: str) -> str:
    return "D#" + birth_date


@dataclass(frozen=True, slots=True)
class Score:
    person_id: str
    score: float
    breakdown: dict[str, float] = field(default_factory=dict)
    deterministic: bool = False


def name_agreement(a: Candidate, b: Candidate) -> str:
    if a.name == b.name:
        return "exact"
    if a.pinyin and a.pinyin == b.pinyin:
        return "homophone"
    fa = [fuzzy_syllable(s) for s in a.pinyin]
    fb = [fuzzy_syllable(s) for s in b.pinyin]
    if fa and fa == fb:
        return "fuzzy"
    if max(len(fa), len(fb)) >= 2 and _edit_distance(fa, fb) == 1:
        return "partial"
    return "none"


def birth_agreement(a: str, b: str) -> str:
    if a == b:
        return "exact"
    ya, ma, da = a.split("-")
    yb, mb, db = b.split("-")
    if ya == yb and ma == db and da == mb:
        return "transposed"
    if sum(x != y for x, y in zip(a, b, strict=True)) == 1:
        return "one_digit"
    return "different"


def address_overlap(a: str, b: str) -> float:
    """Dice coefficient of character bigrams (0..1) of two normalised addresses."""
    if len(a) < 2 or len(b) < 2:
        return 0.0
    ga = {a[i : i + 2] for i in range(len(a) - 1)}
    gb = {b[i : i + 2] for i in range(len(b) - 1)}
    return 2 * len(ga & gb) / (len(ga) + len(gb))


def normalise_address(raw: str | None) -> str:
    text = unicodedata.normalize("NFKC", raw or "")
    return "".join(ch for ch in text if ch.isalnum())


def shared_ids(a: Candidate, b: Candidate) -> set[str]:
    return {k.key for k in a.ids} & {k.key for k in b.ids}


def conflicts(record: Candidate, person: Candidate) -> list[IdentifierType]:
    """Kinds for which both carry a value and none agrees (a local number counts per
    institution)."""
    out: list[IdentifierType] = []
    for kind in IdentifierType:
        if kind is IdentifierType.LOCAL:
            mine = {(k.assigner, k.hash) for k in record.ids if k.type is kind}
            theirs = {(k.assigner, k.hash) for k in person.ids if k.type is kind}
            assigners = {a for a, _ in mine} & {a for a, _ in theirs}
            if any(
                not ({h for a, h in mine if a == x} & {h for a, h in theirs if a == x})
                for x in assigners
            ):
                out.append(kind)
            continue
        mine_h = {k.hash for k in record.ids if k.type is kind}
        theirs_h = {k.hash for k in person.ids if k.type is kind}
        if mine_h and theirs_h and not (mine_h & theirs_h):
            out.append(kind)
    return out


def score(record: Candidate, person: Candidate) -> Score:
    """Agreement of an incoming record with a person, 0..1, with its breakdown."""
    parts: dict[str, float] = {}
    parts["name"] = W_NAME[name_agreement(record, person)]
    parts["birth_date"] = W_BIRTH[birth_agreement(record.birth_date, person.birth_date)]
    parts["sex"] = W_SEX["same" if record.sex == person.sex else "different"]
    if record.phone and person.phone and record.phone == person.phone:
        parts["phone"] = W_PHONE
    if record.address and person.address:
        parts["address"] = round(W_ADDRESS * address_overlap(record.address, person.address), 3)
    for kind in conflicts(record, person):
        parts[f"conflict.{kind}"] = CONFLICT_PENALTY[kind]
    total = min(1.0, max(0.0, sum(parts.values())))
    return Score(person.person_id, round(total, 3), parts)


def contradicts(record: Candidate, person: Candidate) -> str | None:
    """Why a deterministic (identifier) hit must not be trusted, if it must not: a national
    identifier of the same kind disagrees, or neither name nor birth date agrees at all."""
    hard = [k for k in conflicts(record, person) if k is not IdentifierType.LOCAL]
    if hard:
        return f"conflicting {hard[0]}"
    if (
        name_agreement(record, person) == "none"
        and birth_agreement(record.birth_date, person.birth_date) == "different"
    ):
        return "name and birth date both differ"
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    score: float
    person_id: str | None  # the person matched (MATCH) or None
    candidates: tuple[Score, ...] = ()  # scored candidates at or above review_threshold


def decide(
    record: Candidate,
    candidates: list[Candidate],
    match_threshold: float,
    review_threshold: float,
) -> Decision:
    """The probabilistic outcome for a record with no identifier hit.

    Auto-link needs exactly one candidate at or above match_threshold: two such candidates
    mean the index itself holds a likely duplicate, which a person should look at.
    """
    scored = sorted(
        (score(record, c) for c in candidates if c.person_id != record.person_id),
        key=lambda s: (-s.score, s.person_id),
    )
    over_review = [s for s in scored if s.score >= review_threshold][:MAX_CANDIDATES]
    over_match = [s for s in over_review if s.score >= match_threshold]
    if len(over_match) == 1:
        best = over_match[0]
        return Decision(Outcome.MATCH, best.score, best.person_id, tuple(over_review))
    if over_review:
        return Decision(Outcome.POSSIBLE_MATCH, over_review[0].score, None, tuple(over_review))
    top = scored[0].score if scored else 0.0
    return Decision(Outcome.NO_MATCH, top, None, ())


def _edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]
