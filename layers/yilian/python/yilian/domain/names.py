"""Chinese personal names: normalising, pinyin, and the fuzzy pinyin key that finds
homophones and the sounds clerks commonly confuse.

A name is written down by ear at a registration desk more often than it is copied from an ID
card, so one person shows up as 王丽 / 王莉 (same pinyin) or 张振 / 赞振 (zh/z heard alike).
The fuzzy key folds the usual confusions of southern Mandarin:

    zh/z  ch/c  sh/s      retroflex and dental initials
    n/l                   nasal and lateral initials
    f/h                   fu/hu, fang/huang, fei/hui ...
    -ng/-n                ang/an, eng/en, ing/in

pypinyin is imported lazily (about 0.2 s): only code that actually needs a reading pays it.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from yilian.domain.errors import InvalidInput

MAX_NAME_LENGTH = 40
_DOTS = str.maketrans({c: "·" for c in "•‧・．.·"})
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_NOT_NAME = re.compile(r"[0-9\x00-\x1f\x7f@#$%^&*_=+<>{}\[\]|\\/\"';:?!，。；：？！]")

# Readings a surname takes that differ from the character's everyday reading.
SURNAME_READINGS = {
    "单": "shan", "曾": "zeng", "解": "xie", "仇": "qiu", "区": "ou", "朴": "piao",
    "查": "zha", "翟": "zhai", "盖": "ge", "乐": "yue", "覃": "qin", "缪": "miao",
    "种": "chong", "召": "shao", "员": "yun", "秘": "bi", "繁": "po", "尉": "wei",
    "牟": "mou", "黑": "he", "隗": "wei", "冼": "xian", "洗": "xian",
}  # fmt: skip
COMPOUND_SURNAMES = frozenset(
    "欧阳 司马 诸葛 上官 东方 皇甫 尉迟 公孙 慕容 长孙 宇文 司徒 夏侯 令狐 端木 澹台 独孤 "
    "南宫 西门 轩辕 呼延 万俟 申屠 公羊 闻人 百里 东郭 钟离 赫连 拓跋".split()
)
# Readings of a surname kept as a pair (the first character reads differently there).
COMPOUND_READINGS = {"尉迟": ("yu", "chi"), "万俟": ("mo", "qi"), "长孙": ("zhang", "sun")}

# f-syllables folded onto the h-syllables they are confused with.
_F_TO_H = {
    "fa": "hua", "fan": "huan", "fang": "huang", "fei": "hui", "fen": "hun",
    "feng": "hong", "fo": "huo", "fou": "hou", "fu": "hu",
}  # fmt: skip

SYLLABLES = frozenset(
    (
        "a ai an ang ao ba bai ban bang bao bei ben beng bi bian biang biao bie bin bing bo bong "
        "bu ca cai can cang cao ce cei cen ceng cha chai chan chang chao che chen cheng chi chong "
        "chou chu chua chuai chuan chuang chui chun chuo ci cong cou cu cuan cui cun cuo da dai "
        "dan dang dao de dei den deng di dia dian diao die din ding diu dong dou du duan dui dun "
        "duo e ei en eng er fa fan fang fei fen feng fiao fo fou fu ga gai gan gang gao ge gei "
        "gen geng gong gou gu gua guai guan guang gui gun guo ha hai han hang hao he hei hen heng "
        "hong hou hu hua huai huan huang hui hun huo ji jia jian jiang jiao jie jin jing jiong "
        "jiu ju juan jue jun ka kai kan kang kao ke kei ken keng kong kou ku kua kuai kuan kuang "
        "kui kun kuo la lai lan lang lao le lei len leng li lia lian liang liao lie lin ling liu "
        "lo long lou lu luan lun luo lv lve ma mai man mang mao me mei men meng mi mian miao mie "
        "min ming miu mo mou mu na nai nan nang nao ne nei nen neng ni nia nian niang niao nie "
        "nin ning niu nong nou nu nuan nun nuo nv nve o ou pa pai pan pang pao pei pen peng pi "
        "pian piao pie pin ping po pou pu qi qia qian qiang qiao qie qin qing qiong qiu qu quan "
        "que qun ran rang rao re ren reng ri rong rou ru rua ruan rui run ruo sa sai san sang sao "
        "se sen seng sha shai shan shang shao she shei shen sheng shi shou shu shua shuai shuan "
        "shuang shui shun shuo si song sou su suan sui sun suo ta tai tan tang tao te tei teng ti "
        "tian tiao tie ting tong tou tu tuan tui tun tuo wa wai wan wang wei wen weng wo wong wu "
        "xi xia xian xiang xiao xie xin xing xiong xiu xu xuan xue xun ya yan yang yao ye yi yin "
        "ying yo yong you yu yuan yue yun za zai zan zang zao ze zei zen zeng zha zhai zhan zhang "
        "zhao zhe zhei zhen zheng zhi zhong zhou zhu zhua zhuai zhuan zhuang zhui zhun zhuo zi "
        "zong zou zu zuan zui zun zuo"
    ).split()
)
_MAX_SYLLABLE = max(len(s) for s in SYLLABLES)


def normalise_name(raw: str | None) -> str:
    """The stored form of a name: NFKC, no spaces, one kind of middle dot (少数民族 names such
    as 阿依古丽·买买提). Raises NAME_REQUIRED / NAME_TOO_LONG / NAME_FORMAT."""
    text = unicodedata.normalize("NFKC", raw or "").translate(_DOTS)
    has_han = bool(_HAN.search(text))
    # Han names carry no spaces; Latin-script names keep single spaces between words.
    text = re.sub(r"\s+", "" if has_han else " ", text).strip(" ·")
    if not text:
        raise InvalidInput("NAME_REQUIRED", "a name is required", field="name")
    if len(text) > MAX_NAME_LENGTH:
        raise InvalidInput(
            "NAME_TOO_LONG", f"a name has at most {MAX_NAME_LENGTH} characters", field="name"
        )
    if _NOT_NAME.search(text):
        raise InvalidInput("NAME_FORMAT", "a name has no digits or symbols", field="name")
    return text


def has_han(text: str) -> bool:
    return bool(_HAN.search(text))


def split_name(name: str) -> tuple[str, str]:
    """(family, given): compound surnames (欧阳, 诸葛 ...) recognised; Latin names split on the
    last space, family name last."""
    if not has_han(name):
        given, _, family = name.rpartition(" ")
        return (family, given) if given else (name, "")
    if "·" in name:  # transliterated names: given·family
        given, _, family = name.rpartition("·")
        return family, given
    if len(name) > 2 and name[:2] in COMPOUND_SURNAMES:
        return name[:2], name[2:]
    return name[:1], name[1:]


@lru_cache(maxsize=65536)
def name_pinyin(name: str) -> tuple[str, ...]:
    """Toneless pinyin syllables of a name, with surname readings (单 shan, 曾 zeng ...).
    Latin-script words come back lowercased, dots and spaces are dropped."""
    from pypinyin import Style, lazy_pinyin  # lazy: ~0.2 s to import

    family, given = split_name(name) if has_han(name) and "·" not in name else ("", name)
    out: list[str] = []
    if family in COMPOUND_READINGS:
        out.extend(COMPOUND_READINGS[family])
    elif len(family) == 1 and family in SURNAME_READINGS:
        out.append(SURNAME_READINGS[family])
    elif family:
        given = family + given
    for token in lazy_pinyin(given, style=Style.NORMAL, errors="default"):
        if _HAN.search(token):
            out.append(token)  # a character pypinyin cannot read stays itself
        else:
            out.extend(parse_pinyin(token))  # syllables, and Latin words split as a search is
    return tuple(out)


def fuzzy_syllable(syllable: str) -> str:
    """Fold one toneless syllable onto its fuzzy form (see the module docstring)."""
    s = _F_TO_H.get(syllable, syllable)
    if s[:2] in ("zh", "ch", "sh"):
        s = s[0] + s[2:]
    if s.startswith("n") and s != "ng":
        s = "l" + s[1:]
    if s.endswith("ng") and len(s) > 2:
        s = s[:-1]
    return s


def fuzzy_key(syllables: tuple[str, ...] | list[str]) -> str:
    """The blocking key of a name: fuzzy syllables joined by '-' (王芳, 王方, 汪芳 -> wan-huan)."""
    return "-".join(fuzzy_syllable(s) for s in syllables)


def pinyin_text(syllables: tuple[str, ...] | list[str]) -> str:
    return " ".join(syllables)


def parse_pinyin(text: str) -> tuple[str, ...]:
    """Pinyin typed into a search box ('wangfang', 'Wang Fang', 'lü') to syllables. Words
    are split into syllables by the fewest-syllables segmentation; a word that is not
    pinyin is kept whole (a Latin-script name)."""
    clean = unicodedata.normalize("NFKC", text or "").lower()
    clean = clean.replace("ü", "v").replace("u:", "v").replace("'", " ")
    clean = re.sub(r"\b([ln])ue\b", r"\1ve", clean)
    out: list[str] = []
    for word in re.split(r"[^a-z]+", clean):
        if word:
            out.extend(_segment(word) or (word,))
    return tuple(out)


def _segment(word: str) -> tuple[str, ...] | None:
    """Fewest-syllables split of a run of letters, longest first syllable on ties."""
    best: list[tuple[str, ...] | None] = [None] * (len(word) + 1)
    best[len(word)] = ()
    for i in range(len(word) - 1, -1, -1):
        for j in range(min(len(word), i + _MAX_SYLLABLE), i, -1):
            piece = word[i:j]
            if piece in SYLLABLES and best[j] is not None:
                rest = best[j]
                assert rest is not None
                cand = (piece, *rest)
                current = best[i]
                if current is None or len(cand) < len(current):
                    best[i] = cand
    return best[0]
