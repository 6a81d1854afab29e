"""Names: normalising, pinyin with surname readings, homophones and fuzzy pinyin keys."""

import pytest

from yilian.domain.errors import InvalidInput
from yilian.domain.names import (
    fuzzy_key,
    fuzzy_syllable,
    name_pinyin,
    normalise_name,
    parse_pinyin,
    split_name,
)


def key(name: str) -> str:
    return fuzzy_key(name_pinyin(normalise_name(name)))


def test_names_are_normalised_to_one_written_form():
    assert normalise_name(" 张 三 ") == "张三"
    assert normalise_name("阿依古丽•买买提") == "阿依古丽·买买提"  # one kind of middle dot
    assert normalise_name("Ｗａｎｇ  Fang") == "Wang Fang"  # full width, one space


@pytest.mark.parametrize(
    ("raw", "code"),
    [(None, "NAME_REQUIRED"), ("   ", "NAME_REQUIRED"), ("张三3", "NAME_FORMAT"),
     ("张" * 41, "NAME_TOO_LONG"), ("王<b>", "NAME_FORMAT")],
)  # fmt: skip
def test_bad_names_are_refused_with_a_reason(raw, code):
    with pytest.raises(InvalidInput) as exc:
        normalise_name(raw)
    assert exc.value.code == code


def test_surnames_read_as_surnames():
    # Given surnames whose everyday reading differs
    # Then the surname reading is used
    assert name_pinyin("单雄信")[0] == "shan"
    assert name_pinyin("曾国藩")[0] == "zeng"
    assert name_pinyin("仇英")[0] == "qiu"
    assert name_pinyin("尉迟恭")[:2] == ("yu", "chi")
    assert name_pinyin("欧阳修") == ("ou", "yang", "xiu")


def test_homophones_share_their_pinyin():
    # Given names a clerk writes differently for the same sound
    # Then they have the same pinyin
    assert name_pinyin("王丽") == name_pinyin("王莉") == ("wang", "li")
    assert name_pinyin("张伟") == name_pinyin("张玮")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("zhang", "zang"),  # zh/z
        ("chen", "cen"),  # ch/c
        ("shi", "si"),  # sh/s
        ("nan", "lan"),  # n/l
        ("fu", "hu"),  # f/h
        ("fang", "huang"),  # f/h with a final
        ("fei", "hui"),
        ("lin", "ling"),  # -n/-ng
        ("chen", "cheng"),
    ],
)
def test_common_confusions_share_a_fuzzy_syllable(a, b):
    assert fuzzy_syllable(a) == fuzzy_syllable(b)


def test_distinct_sounds_stay_distinct():
    assert fuzzy_syllable("wang") != fuzzy_syllable("huang")
    assert fuzzy_syllable("zhi") != fuzzy_syllable("ji")
    assert key("王芳") != key("黄芳")
    assert key("李明") == key("李敏")  # ming/min: -ng/-n
    assert key("李明") != key("李强")


def test_fuzzy_keys_bring_confusable_names_together():
    # Given names heard alike in southern Mandarin
    # Then they share a blocking key
    assert key("王芳") == key("汪方") == key("王芳")
    assert key("张振") == key("臧震")
    assert key("刘宁") == key("牛林")
    assert key("胡飞") == key("傅辉")


def test_pinyin_typed_in_a_search_box_is_split_into_syllables():
    assert parse_pinyin("wangfang") == ("wang", "fang")
    assert parse_pinyin("Wang Fang") == ("wang", "fang")
    assert parse_pinyin("zhangxiaoming") == ("zhang", "xiao", "ming")
    assert parse_pinyin("xi'an") == ("xi", "an")
    assert parse_pinyin("lüe") == parse_pinyin("lue") == ("lve",)
    assert parse_pinyin("smith") == ("smith",)  # not pinyin: kept whole


def test_a_search_in_pinyin_meets_the_stored_reading():
    assert fuzzy_key(parse_pinyin("wangfang")) == key("王芳")
    assert fuzzy_key(parse_pinyin("Anna Li")) == key("Anna Li")


def test_family_and_given_names_are_split():
    assert split_name("张三") == ("张", "三")
    assert split_name("欧阳娜娜") == ("欧阳", "娜娜")
    assert split_name("阿依古丽·买买提") == ("买买提", "阿依古丽")
    assert split_name("Fang Wang") == ("Wang", "Fang")


def test_pypinyin_is_imported_only_when_a_reading_is_needed():
    import subprocess
    import sys

    code = (
        "import sys; import yilian.domain.names, yilian.domain.matching, "
        "yilian.services.empi; print('pypinyin' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
