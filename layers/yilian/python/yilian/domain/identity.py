"""Personal identifiers of the patient index: validation, normalisation and masking.

Four kinds, each with its own rules:
- resident ID card number (居民身份证号码, GB 11643-1999): 18 characters, 6-digit region code
  (first two digits a province code), birth date YYYYMMDD in chars 7-14, a 3-digit order
  code whose last digit is odd for men and even for women, and an ISO 7064 MOD 11-2 check
  character (0-9 or X). The embedded birth date and sex must agree with the ones given.
- electronic health card (电子健康卡), medical insurance e-voucher number (医保电子凭证):
  national, one per person; letters and digits.
- an institution's local patient number (门诊号/病案号): unique only together with the
  institution that assigned it, so the assigner is part of its identity.

Clear values are never stored or logged: a keyed hash (blind index) finds them, a sealed
copy keeps them, and everything shown is masked (3301**********1234).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from yilian.domain.errors import InvalidInput


class IdentifierType(StrEnum):
    ID_CARD = "id_card"  # 居民身份证
    HEALTH_CARD = "health_card"  # 电子健康卡
    INSURANCE = "insurance"  # 医保电子凭证
    LOCAL = "local"  # an institution's own patient number


# National identifiers: a person has at most one of each; two different values mean two
# people (or a typo), never one person.
SINGLE_VALUED = frozenset(
    {IdentifierType.ID_CARD, IdentifierType.HEALTH_CARD, IdentifierType.INSURANCE}
)

# Province-level codes (GB/T 2260) that open a resident ID number; 71/81/82/83 are used by
# residence permits of Taiwan, Hong Kong and Macao residents.
PROVINCE_CODES = frozenset(
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 "
    "61 62 63 64 65 71 81 82 83".split()
)
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2
_CHECK = "10X98765432"  # check character for (sum of weighted digits) mod 11
_ID_SHAPE = re.compile(r"^\d{17}[\dX]$")
_NATIONAL_SHAPE = re.compile(r"^[0-9A-Z]{6,64}$")
_LOCAL_SHAPE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._/-]{0,39}$")


def id_check_digit(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("need the first 17 digits")
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


@dataclass(frozen=True, slots=True)
class IdCard:
    number: str
    region: str
    birth_date: date
    sex: str  # male | female


def _clean(value: str) -> str:
    return unicodedata.normalize("NFKC", value or "").strip().replace(" ", "").upper()


def parse_id_card(value: str, today: date | None = None) -> IdCard:
    """Normalise and check an 18-character resident ID number (format, region, embedded
    birth date, check character). Raises InvalidInput with ID_FORMAT or ID_CHECK_DIGIT."""
    number = _clean(value)
    if not _ID_SHAPE.match(number):
        raise InvalidInput(
            "ID_FORMAT", "a resident ID number has 17 digits and a check digit or X", part="shape"
        )
    if number[:2] not in PROVINCE_CODES:
        raise InvalidInput("ID_FORMAT", "the region code is not a province of China", part="region")
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidInput(
            "ID_FORMAT", "the embedded birth date is not a date", part="birth_date"
        ) from None
    if born.year < 1880 or born > (today or date.today()):
        raise InvalidInput(
            "ID_FORMAT", "the embedded birth date is out of range", part="birth_date"
        )
    if id_check_digit(number[:17]) != number[17]:
        raise InvalidInput("ID_CHECK_DIGIT", "the check digit of the ID number is wrong")
    sex = "male" if int(number[16]) % 2 else "female"
    return IdCard(number=number, region=number[:6], birth_date=born, sex=sex)


def verify_id_card(value: str, birth_date: date, sex: str, today: date | None = None) -> IdCard:
    """parse_id_card, plus: the embedded birth date and sex agree with the given ones."""
    card = parse_id_card(value, today)
    if card.birth_date != birth_date:
        raise InvalidInput(
            "ID_BIRTH_DATE_MISMATCH",
            "the birth date in the ID number differs from the birth date given",
        )
    if card.sex != sex:
        raise InvalidInput(
            "ID_SEX_MISMATCH", "the sex encoded in the ID number differs from the sex given"
        )
    return card


@dataclass(frozen=True, slots=True)
class Identifier:
    """A validated identifier in clear (only ever in memory, on its way to be protected)."""

    type: IdentifierType
    value: str
    assigner: str | None = None  # institution id, for LOCAL only

    @property
    def index_kind(self) -> str:
        return str(self.type)

    @property
    def index_value(self) -> str:
        """What the blind index hashes: a local number only means something with its assigner."""
        if self.type is IdentifierType.LOCAL:
            return f"{self.assigner}\x1f{self.value}"
        return self.value

    def masked(self) -> str:
        return mask(self.value)


def normalise_identifier(type_: str, value: str, assigner: str | None = None) -> Identifier:
    """Shape checks for every kind; ID numbers are checked fully by verify_id_card."""
    try:
        kind = IdentifierType(type_)
    except ValueError:
        raise InvalidInput(
            "IDENTIFIER_TYPE",
            f"unknown identifier type {type_!r}",
            allowed=[t.value for t in IdentifierType],
        ) from None
    if kind is IdentifierType.ID_CARD:
        return Identifier(kind, _clean(value))
    if kind is IdentifierType.LOCAL:
        clean = unicodedata.normalize("NFKC", value or "").strip()
        if not assigner:
            raise InvalidInput(
                "ASSIGNER_REQUIRED", "a local patient number needs the institution that assigned it"
            )
        if not _LOCAL_SHAPE.match(clean):
            raise InvalidInput(
                "IDENTIFIER_FORMAT",
                "a local patient number is 1-40 letters, digits or ._/-",
                type=str(kind),
            )
        return Identifier(kind, clean, assigner.strip())
    clean = _clean(value)
    if not _NATIONAL_SHAPE.match(clean):
        raise InvalidInput(
            "IDENTIFIER_FORMAT", f"a {kind} is 6-64 letters or digits", type=str(kind)
        )
    return Identifier(kind, clean)


def mask(value: str) -> str:
    """Keep just enough to recognise a number: 3301**********1234, 13*****78, ****."""
    n = len(value)
    if n <= 4:
        return "*" * n
    if n <= 8:
        return value[:1] + "*" * (n - 3) + value[-2:]
    return value[:4] + "*" * (n - 8) + value[-4:]
