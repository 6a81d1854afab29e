"""Mutual recognition of results (检查检验结果互认) inside the consortium.

Each item groups the LOINC codes that count as the same exam and how long a result stays
valid for recognition (days), after the common provincial practice of recognising routine
labs for about a week, chemistry panels for a month and imaging for one to three months.
A county adjusts the windows by editing this table; the codes are LOINC.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecognitionItem:
    key: str
    name: str
    category: str  # lab | imaging
    codes: frozenset[str]
    valid_days: int


ITEMS: tuple[RecognitionItem, ...] = (
    RecognitionItem("cbc", "血常规", "lab", frozenset({"58410-2", "57021-8", "57782-5"}), 7),
    RecognitionItem("glucose", "空腹血糖", "lab", frozenset({"1558-6"}), 7),
    RecognitionItem("hba1c", "糖化血红蛋白", "lab", frozenset({"4548-4", "17856-6"}), 90),
    RecognitionItem("hepatic", "肝功能", "lab", frozenset({"24325-3", "1742-6"}), 30),
    RecognitionItem("renal", "肾功能", "lab", frozenset({"24362-6", "2160-0"}), 30),
    RecognitionItem("lipid", "血脂", "lab", frozenset({"57698-3", "24331-1", "2093-3"}), 90),
    RecognitionItem("electrolytes", "电解质", "lab", frozenset({"24326-1", "2823-3"}), 7),
    RecognitionItem("chest_xr", "胸部X线", "imaging", frozenset({"36643-5", "30745-4"}), 30),
    RecognitionItem("chest_ct", "胸部CT", "imaging", frozenset({"24627-2", "29252-4"}), 90),
    RecognitionItem("abdomen_us", "上腹部超声", "imaging", frozenset({"24558-9"}), 30),
    RecognitionItem("head_ct", "头颅CT", "imaging", frozenset({"24725-4", "30799-1"}), 90),
)


def item_for(code_or_key: str) -> RecognitionItem | None:
    """The item an order names, by its key ("cbc") or any of its LOINC codes."""
    value = (code_or_key or "").strip()
    for item in ITEMS:
        if value == item.key or value in item.codes:
            return item
    return None
