"""ICD-10 diagnosis codes: the format check, and look-up and search over the codes county,
township and village doctors use every day (icd10_common.tsv beside this file).

A referral carries its diagnosis as a code and a name. The code is checked for its WHO
shape (`is_valid_icd10_format`): a letter, two digits and an optional subdivision of one to
four characters after a dot (I10, I63.9, S72.00, and the 国家临床版 extensions I10.x00,
I63.900); chapter U is reserved, so only U07.1 (COVID-19) is accepted there.
A code outside the common list may still be valid; `lookup` only says whether we know it.

`search` is what a doctor types into the diagnosis box: a code or its start ("I6" lists
I60-I69), Chinese ("脑梗" finds the I63 codes), or pinyin, whole ("naogengsi") or by
initials ("ngs"). Results are ranked exact code > code prefix > name prefix > name
substring > pinyin, and within a rank by where the match is, the shorter (more general)
name, then the code, so the order is total and the same on every call.

The list and its pinyin are reference data, the same in every process: they are read once,
lazily (the pinyin only when a pinyin query comes, as pypinyin costs ~0.2 s to import).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

_PACKAGE = __name__.rpartition(".")[0]
_DATA_FILE = "icd10_common.tsv"

_FORMAT = re.compile(r"[A-TV-Z][0-9]{2}(\.[0-9A-Z]{1,4})?")
_U_CODES = frozenset({"U07.1"})  # chapter U is reserved; COVID-19 is the one in use
_HAN_RUN = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+)")
_WORD = re.compile(r"[a-z0-9]+")
_NOT_WORD = re.compile(r"[\W_]+")
_PINYIN_QUERY = re.compile(r"[a-z0-9]*[a-z][a-z0-9]*")

# Ranks, best first.
_EXACT, _CODE_PREFIX, _NAME_PREFIX, _NAME_SUBSTRING, _PINYIN = range(5)
_Key = tuple[int, int, int, int, str]


@dataclass(frozen=True, slots=True)
class Icd10Code:
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class _Reading:
    """The pinyin of one name: syllables run together, their initials, and where each
    syllable starts in `full`. Digits and Latin letters in a name stay whole words."""

    full: str
    initials: str
    starts: tuple[int, ...]


def normalise_code(code: str | None) -> str:
    """The written form of a code: NFKC (full-width ｉ６３．９ typed on a Chinese keyboard),
    no white space, upper case."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", code or "")).upper()


def is_valid_icd10_format(code: str | None) -> bool:
    """Whether `code` has the shape of a WHO ICD-10 code (see the module docstring)."""
    text = normalise_code(code)
    return bool(_FORMAT.fullmatch(text)) or text in _U_CODES


@cache
def common_codes() -> tuple[Icd10Code, ...]:
    """The curated common codes, in the order of the data file (by chapter)."""
    text = files(_PACKAGE).joinpath(_DATA_FILE).read_text(encoding="utf-8")
    out: list[Icd10Code] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        code, _, name = line.partition("\t")
        out.append(Icd10Code(code.strip(), name.strip()))
    return tuple(out)


@cache
def _by_code() -> dict[str, Icd10Code]:
    return {entry.code: entry for entry in common_codes()}


@cache
def _folded_names() -> tuple[str, ...]:
    return tuple(_fold(entry.name) for entry in common_codes())


@cache
def _readings() -> tuple[_Reading, ...]:
    from pypinyin import Style, lazy_pinyin  # lazy: ~0.2 s to import

    def reading(name: str) -> _Reading:
        words: list[tuple[str, str]] = []  # (word, its initial)
        for part in _HAN_RUN.split(name):
            if _HAN_RUN.fullmatch(part):
                syllables = lazy_pinyin(part, style=Style.NORMAL, errors="default")
                words.extend((s, s[:1]) for s in syllables if s)
            else:
                words.extend((w, w) for w in _WORD.findall(_fold(part)))
        starts, offset = [], 0
        for word, _ in words:
            starts.append(offset)
            offset += len(word)
        full = "".join(w for w, _ in words)
        return _Reading(full, "".join(i for _, i in words), tuple(starts))

    return tuple(reading(entry.name) for entry in common_codes())


def lookup(code: str | None) -> Icd10Code | None:
    """The common code `code` names (case and white space do not matter), else None."""
    return _by_code().get(normalise_code(code))


def search(query: str | None, limit: int = 20) -> list[Icd10Code]:
    """Common codes matching `query` by code, Chinese name or pinyin, best first (see the
    module docstring); at most `limit`. A blank query finds nothing."""
    text = unicodedata.normalize("NFKC", query or "").strip()
    name_query = _fold(text)
    if not name_query or limit <= 0:
        return []
    code_query = normalise_code(text)
    pinyin_query = name_query.replace("ü", "v")
    if not _PINYIN_QUERY.fullmatch(pinyin_query):
        pinyin_query = ""
    entries = common_codes()
    folded = _folded_names()
    readings = _readings() if pinyin_query else ()
    ranked: list[tuple[_Key, Icd10Code]] = []
    for i, entry in enumerate(entries):
        key = _text_key(entry, folded[i], code_query, name_query)
        if key is None and readings:
            key = _pinyin_key(entry, folded[i], readings[i], pinyin_query)
        if key is not None:
            ranked.append((key, entry))
    ranked.sort(key=lambda pair: pair[0])
    return [entry for _, entry in ranked[:limit]]


def _fold(text: str) -> str:
    """A name or query compared loosely: NFKC, case-folded, without spaces or punctuation,
    so 原发性高血压 finds 特发性(原发性)高血压."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def _text_key(entry: Icd10Code, folded: str, code_query: str, name_query: str) -> _Key | None:
    if entry.code == code_query:
        return (_EXACT, 0, 0, 0, entry.code)
    if entry.code.startswith(code_query):
        return (_CODE_PREFIX, 0, 0, 0, entry.code)
    at = folded.find(name_query)
    if at == 0:
        return (_NAME_PREFIX, 0, 0, len(folded), entry.code)
    if at > 0:
        return (_NAME_SUBSTRING, 0, at, len(folded), entry.code)
    return None


def _pinyin_key(entry: Icd10Code, folded: str, reading: _Reading, query: str) -> _Key | None:
    """Whole pinyin before initials, a start before a later syllable."""
    if reading.full.startswith(query):
        return (_PINYIN, 0, 0, len(folded), entry.code)
    if reading.initials.startswith(query):
        return (_PINYIN, 1, 0, len(folded), entry.code)
    for syllable, start in enumerate(reading.starts):
        if reading.full.startswith(query, start):
            return (_PINYIN, 2, syllable, len(folded), entry.code)
    at = reading.initials.find(query)
    if at >= 0:
        return (_PINYIN, 3, at, len(folded), entry.code)
    return None
