"""Resident ID numbers (GB 11643-1999) and the other identifiers of the patient index."""

from datetime import date

import pytest

from tests.fakes import make_id_number
from yilian.domain.errors import InvalidInput
from yilian.domain.identity import (
    IdentifierType,
    id_check_digit,
    mask,
    normalise_identifier,
    parse_id_card,
    verify_id_card,
)

TODAY = date(2026, 6, 1)


def code_of(fn, *args, **kwargs) -> str:
    with pytest.raises(InvalidInput) as exc:
        fn(*args, **kwargs)
    return exc.value.code


@pytest.mark.parametrize(
    ("birth", "sex", "seq"),
    [("1985-03-12", "male", 7), ("1990-07-15", "female", 3), ("2024-02-29", "female", 0)],
)
def test_a_valid_id_number_parses_with_its_birth_date_and_sex(birth, sex, seq):
    # Given an ID number built by the independent test helper
    number = make_id_number(birth, sex, seq)
    # When it is parsed
    card = parse_id_card(number, TODAY)
    # Then its region, birth date and sex come out of it
    assert card.number == number
    assert card.region == "330122"
    assert card.birth_date == date.fromisoformat(birth)
    assert card.sex == sex


def test_the_check_digit_can_be_x_and_a_lowercase_x_is_accepted():
    # Given numbers whose check character is X (found with the helper)
    for number in ("33012219850312001X", "33012219900715002X"):
        # When the check digit is computed, and a lowercase x is parsed
        assert id_check_digit(number[:17]) == "X"
        # Then both agree with the helper and normalise to upper case
        assert parse_id_card(number.lower(), TODAY).number == number


def test_the_known_published_example_checks():
    # Given the example number of GB 11643's annex (Beijing, 1949-12-31, male)
    # Then its check character is X
    assert id_check_digit("11010519491231002") == "X"


def test_full_width_digits_and_spaces_are_normalised():
    number = make_id_number("1985-03-12", "male", 7)
    wide = " ".join(chr(ord(c) + 0xFEE0) for c in number)  # １２３... with spaces
    assert parse_id_card(wide, TODAY).number == number


def test_a_wrong_check_digit_is_refused():
    number = make_id_number("1985-03-12", "male", 7)
    wrong = number[:17] + ("0" if number[17] != "0" else "1")
    assert code_of(parse_id_card, wrong, TODAY) == "ID_CHECK_DIGIT"


@pytest.mark.parametrize(
    "number",
    [
        "33012219850312071",  # 17 characters
        "3301221985031207123",  # 19 characters
        "33012219850312A071",  # a letter inside
        "X30122198503120713",  # X not at the end
        "",
    ],
)
def test_malformed_numbers_are_refused_as_format_errors(number):
    assert code_of(parse_id_card, number, TODAY) == "ID_FORMAT"


def test_a_region_code_outside_china_is_a_format_error():
    # Given a number whose check digit is right but whose province code (99) does not exist
    body = "990122198503120710"[:17]
    number = body + id_check_digit(body)
    # Then it is refused, naming the region
    with pytest.raises(InvalidInput) as exc:
        parse_id_card(number, TODAY)
    assert exc.value.code == "ID_FORMAT"
    assert exc.value.details["part"] == "region"


@pytest.mark.parametrize("birth", ["19850230", "19851301", "20300101", "18500101"])
def test_an_impossible_or_future_embedded_birth_date_is_a_format_error(birth):
    body = f"330122{birth}071"
    number = body + id_check_digit(body)
    with pytest.raises(InvalidInput) as exc:
        parse_id_card(number, TODAY)
    assert (exc.value.code, exc.value.details["part"]) == ("ID_FORMAT", "birth_date")


def test_the_embedded_birth_date_must_agree_with_the_given_one():
    number = make_id_number("1985-03-12", "male", 7)
    assert verify_id_card(number, date(1985, 3, 12), "male", TODAY).sex == "male"
    assert code_of(verify_id_card, number, date(1985, 12, 3), "male", TODAY) == (
        "ID_BIRTH_DATE_MISMATCH"
    )


def test_the_embedded_sex_must_agree_with_the_given_one():
    # Given a woman's number (even order code)
    number = make_id_number("1990-07-15", "female", 3)
    # When it is registered for a man
    # Then it is refused
    assert code_of(verify_id_card, number, date(1990, 7, 15), "male", TODAY) == "ID_SEX_MISMATCH"


def test_masking_keeps_the_region_and_the_last_four():
    assert mask("330122198503120713") == "3301**********0713"
    assert mask("V00012") == "V***12"
    assert mask("123") == "***"


def test_a_local_number_needs_its_institution_and_hashes_with_it():
    with pytest.raises(InvalidInput) as exc:
        normalise_identifier("local", "V00001")
    assert exc.value.code == "ASSIGNER_REQUIRED"
    a = normalise_identifier("local", " V00001 ", "qiaotou")
    b = normalise_identifier("local", "V00001", "shimen")
    assert a.value == "V00001"
    # the same number at two institutions is two identifiers
    assert a.index_value != b.index_value


def test_national_numbers_are_upper_cased_letters_and_digits():
    ident = normalise_identifier("health_card", " ab12cd34ef ")
    assert (ident.type, ident.value) == (IdentifierType.HEALTH_CARD, "AB12CD34EF")
    assert code_of(normalise_identifier, "insurance", "12-34") == "IDENTIFIER_FORMAT"
    assert code_of(normalise_identifier, "passport", "E12345678") == "IDENTIFIER_TYPE"
