"""ICD-10 terminology: the code format, the common-code list, look-up and search by code,
Chinese and pinyin."""

import re

import pytest

from yilian.domain.terminology.icd10 import (
    Icd10Code,
    common_codes,
    is_valid_icd10_format,
    lookup,
    search,
)


def codes(results: list[Icd10Code]) -> list[str]:
    return [r.code for r in results]


@pytest.mark.parametrize(
    "code",
    ["A00", "I10", "I63.9", "S72.00", "E11.9", "Z50.1", " i63.9 ", "ｉ６３．９", "C34.9",
     "U07.1", "O80", "K35.8", "I10.x00", "I63.900"],  # and 国家临床版 extensions
)  # fmt: skip
def test_well_formed_codes_are_accepted(code):
    assert is_valid_icd10_format(code)


@pytest.mark.parametrize(
    "code",
    [None, "", "   ", "I6", "I639", "I63.", "63.9", "II63", "I63.95678", "I63-9", "I63.9x!",
     "U07.2", "U85", "脑梗死", "I63.90012"],
)  # fmt: skip
def test_malformed_codes_are_refused(code):
    assert not is_valid_icd10_format(code)


def test_the_common_list_is_well_formed_and_covers_every_chapter():
    # Given the curated list
    entries = common_codes()
    # Then every code is well formed, unique and named
    assert len(entries) >= 350
    assert all(is_valid_icd10_format(e.code) and e.code == e.code.strip() for e in entries)
    assert len({e.code for e in entries}) == len(entries)
    assert all(e.name and "\t" not in e.name for e in entries)
    # And every chapter a county doctor refers from has codes
    assert {e.code[0] for e in entries} >= set("ABCDEFGHIJKLMNOPQRSTZ")


def test_lookup_finds_known_codes_in_any_case_and_spacing():
    # Given codes typed loosely
    # Then the common code is found
    assert lookup("I10") == Icd10Code("I10", "特发性(原发性)高血压")
    assert lookup(" e11.9 ") == Icd10Code("E11.9", "2型糖尿病不伴有并发症")
    assert lookup("j44.1").name == "慢性阻塞性肺病伴有急性加重"  # type: ignore[union-attr]
    assert lookup("I63.9").name == "脑梗死"  # type: ignore[union-attr]


def test_lookup_of_an_unknown_or_malformed_code_is_none():
    assert lookup("I63.8") is None  # well formed, not in the common list
    assert lookup("nonsense") is None
    assert lookup("") is None
    assert lookup(None) is None


def test_a_code_prefix_lists_the_codes_under_it_in_code_order():
    # When a doctor types the start of a code
    found = codes(search("I6"))
    # Then the I60-I69 codes come first, in code order
    head = [c for c in found if c.startswith("I6")]
    assert found[: len(head)] == head == sorted(head)
    assert {"I60.9", "I61.9", "I63.9", "I69.3"} <= set(head)


def test_an_exact_code_comes_before_codes_it_prefixes():
    # Given I10 is both a code and no prefix of another, and E11 only a prefix
    assert codes(search("i10"))[0] == "I10"
    found = codes(search("E11"))
    assert found and all(c.startswith("E11.") for c in found)
    assert codes(search("E11.9"))[0] == "E11.9"


def test_chinese_finds_names_containing_it():
    # When a doctor types part of a Chinese name
    found = search("脑梗")
    # Then the cerebral infarction codes come back, those starting with it first
    assert codes(found)[:2] == ["I63.9", "I69.3"]  # 脑梗死, 脑梗死后遗症
    assert {"I63.3", "I63.4"} <= set(codes(found))
    assert all("脑梗" in r.name for r in found)


def test_chinese_ignores_punctuation_in_names():
    # 特发性(原发性)高血压 is found without its brackets
    assert "I10" in codes(search("原发性高血压"))


def test_pinyin_initials_find_a_name():
    # When a doctor types the initials of 脑梗死
    found = search("ngs")
    # Then 脑梗死 comes first
    assert found[0] == Icd10Code("I63.9", "脑梗死")
    assert "I69.3" in codes(found)


def test_full_pinyin_finds_a_name_with_or_without_spaces():
    assert search("naogengsi")[0].code == "I63.9"
    assert search("Nao Geng Si")[0].code == "I63.9"
    assert search("feiyan")[0].code == "J18.9"  # 肺炎: the shortest name starting with it


def test_pinyin_matches_start_at_a_syllable():
    # Given "ao" is inside the syllable "nao" but starts none
    found = search("aogengsi")
    # Then nothing is found
    assert found == []


def test_initials_keep_digits_of_a_name():
    # 2型糖尿病 -> 2xtnb
    found = codes(search("2xtnb"))
    assert "E11.9" in found
    assert all(c.startswith("E11") for c in found)


def test_ranking_is_exact_code_then_prefix_then_name_then_pinyin():
    # Given "C" is a code prefix and "c" the initial of many names
    found = codes(search("c", limit=500))
    # Then every C code comes before any name matched by pinyin alone
    c_codes = [c for c in found if c.startswith("C")]
    assert found[: len(c_codes)] == c_codes
    assert len(found) > len(c_codes)
    # And a name prefix comes before a name substring
    names = [r.name for r in search("高血压", limit=50)]
    first_substring = next(i for i, n in enumerate(names) if not n.startswith("高血压"))
    assert all(not n.startswith("高血压") for n in names[first_substring:])
    # And a Chinese match comes before a pinyin match
    assert search("肺炎")[0].code == "J18.9"


def test_search_is_deterministic():
    assert search("gxy", limit=50) == search("gxy", limit=50)
    assert search("骨折", limit=50) == search("骨折", limit=50)


def test_limit_caps_the_results():
    assert len(search("S", limit=5)) == 5
    assert len(search("骨折")) == 20  # the default
    assert search("骨折", limit=0) == []
    assert search("骨折", limit=3) == search("骨折", limit=20)[:3]


@pytest.mark.parametrize("query", [None, "", "   ", "，", "()"])
def test_an_empty_query_finds_nothing(query):
    assert search(query) == []


def test_a_query_that_matches_nothing_finds_nothing():
    assert search("xyzxyzq") == []
    assert search("不存在的病名") == []


def test_names_hold_no_stray_white_space():
    assert all(not re.search(r"\s", e.name) for e in common_codes())
