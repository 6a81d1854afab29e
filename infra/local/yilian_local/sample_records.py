"""Sample health records: the FHIR R4 Bundles a county consortium institution contributes to
the health-record API (issue 6): outpatient visits, inpatient stays and their discharge
summary, lab and imaging reports, allergies, and a person's multi-year history of them.

Deterministic: the same arguments give the same Bundle, fullUrls included. Each generator's
times start at `when` (`admitted`) and run a little after it (an encounter's end, a report's
issue: minutes to hours; a discharge: `days` later), so pass a time at least a day past.
`history_for` keeps every date between the birth date and `today`.
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import uuid
from datetime import date, datetime, time, timedelta
from typing import Any, TypedDict, Unpack

from yilian.domain.clock import CHINA_TZ
from yilian_local.demo_county import DOCTORS, INSTITUTIONS

Json = dict[str, Any]
Seed = int | str
LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"
ICD10, ICD9CM = "http://hl7.org/fhir/sid/icd-10", "http://hl7.org/fhir/sid/icd-9-cm"
HL7 = "http://terminology.hl7.org/CodeSystem/"
SID = "https://yilian.example/fhir/sid"
TEXT_PLAIN = "text/plain; charset=utf-8"

# ICD-10 code -> the name a county hospital prints.
DIAGNOSES = {
    "I10": "原发性高血压", "E11.9": "2型糖尿病", "E78.5": "高脂血症",
    "I25.1": "冠状动脉粥样硬化性心脏病", "J44.9": "慢性阻塞性肺病", "I69.3": "脑梗死后遗症",
    "J06.9": "急性上呼吸道感染", "J20.9": "急性支气管炎", "K29.7": "胃炎", "M54.5": "下背痛",
    "I20.0": "不稳定型心绞痛", "J18.9": "肺炎", "K35.8": "急性阑尾炎", "S72.0": "股骨颈骨折",
    "I63.9": "脑梗死", "K80.1": "胆囊结石伴有慢性胆囊炎",
}  # fmt: skip
CHRONIC = ("I10", "E11.9", "E78.5", "I25.1", "J44.9", "I69.3")
ACUTE = ("J06.9", "J20.9", "K29.7", "M54.5")
DAILY, NIGHTLY = "每日一次，每次1片，口服", "每晚一次，每次1片，口服"
TID = "每日三次，每次1片，口服"
# Diagnosis -> what a county doctor prescribes for it: (drug, dosage).
PRESCRIPTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "I10": (("苯磺酸氨氯地平片 5mg", DAILY), ("缬沙坦胶囊 80mg", "每日一次，每次1粒，口服")),
    "E11.9": (("盐酸二甲双胍片 0.5g", "每日三次，每次1片，餐后口服"),
              ("阿卡波糖片 50mg", "每日三次，每次1片，随第一口饭嚼服")),
    "E78.5": (("阿托伐他汀钙片 20mg", NIGHTLY),),
    "I25.1": (("阿司匹林肠溶片 100mg", DAILY), ("单硝酸异山梨酯缓释片 40mg", DAILY)),
    "J44.9": (("噻托溴铵粉吸入剂 18μg", "每日一次，每次1吸，吸入"),),
    "I69.3": (("硫酸氢氯吡格雷片 75mg", DAILY),),
    "J06.9": (("连花清瘟胶囊 0.35g", "每日三次，每次4粒，口服"),
              ("对乙酰氨基酚片 0.5g", "发热时口服1片，每日不超过4次")),
    "J20.9": (("盐酸氨溴索片 30mg", TID),),
    "K29.7": (("奥美拉唑肠溶胶囊 20mg", "每日两次，每次1粒，餐前口服"),),
    "M54.5": (("双氯芬酸钠缓释片 75mg", "每日一次，每次1片，餐后口服"),),
}  # fmt: skip
# LOINC -> (Chinese name, UCUM unit, reference low, reference high, decimals).
TESTS: dict[str, tuple[str, str, float | None, float | None, int]] = {
    "85354-9": ("血压", "mm[Hg]", None, None, 0),
    "8480-6": ("收缩压", "mm[Hg]", 90, 139, 0), "8462-4": ("舒张压", "mm[Hg]", 60, 89, 0),
    "8867-4": ("心率", "/min", 60, 100, 0), "8310-5": ("体温", "Cel", 36.0, 37.3, 1),
    "29463-7": ("体重", "kg", None, None, 1), "8302-2": ("身高", "cm", None, None, 0),
    "59408-5": ("血氧饱和度", "%", 95, 100, 0),
    "6690-2": ("白细胞计数", "10*9/L", 3.5, 9.5, 2),
    "789-8": ("红细胞计数", "10*12/L", 3.8, 5.8, 2),
    "718-7": ("血红蛋白", "g/L", 115, 175, 0), "777-3": ("血小板计数", "10*9/L", 125, 350, 0),
    "770-8": ("中性粒细胞百分比", "%", 40, 75, 1),
    "1742-6": ("丙氨酸氨基转移酶", "U/L", 9, 50, 0),
    "1920-8": ("天门冬氨酸氨基转移酶", "U/L", 15, 40, 0),
    "14631-6": ("总胆红素", "umol/L", 3.4, 20.5, 1), "1751-7": ("白蛋白", "g/L", 40, 55, 1),
    "2160-0": ("肌酐", "umol/L", 45, 110, 0), "22664-7": ("尿素", "mmol/L", 2.8, 7.2, 2),
    "14933-6": ("尿酸", "umol/L", 150, 420, 0), "2823-3": ("钾", "mmol/L", 3.5, 5.3, 2),
    "2951-2": ("钠", "mmol/L", 137, 147, 0), "2093-3": ("总胆固醇", "mmol/L", None, 5.2, 2),
    "14927-8": ("甘油三酯", "mmol/L", None, 1.7, 2),
    "14646-4": ("高密度脂蛋白胆固醇", "mmol/L", 1.04, None, 2),
    "13457-7": ("低密度脂蛋白胆固醇", "mmol/L", None, 3.4, 2),
    "1558-6": ("空腹血糖", "mmol/L", 3.9, 6.1, 2), "4548-4": ("糖化血红蛋白", "%", 4.0, 6.0, 1),
}  # fmt: skip
UNIT_NAMES = {"mm[Hg]": "mmHg", "/min": "次/分", "Cel": "℃", "10*9/L": "×10^9/L",
              "10*12/L": "×10^12/L", "umol/L": "μmol/L"}  # fmt: skip
# panel -> (LOINC report code, Chinese name, its tests).
PANELS = {
    "cbc": ("58410-2", "血常规", ("6690-2", "789-8", "718-7", "777-3", "770-8")),
    "hepatic": ("24325-3", "肝功能", ("1742-6", "1920-8", "14631-6", "1751-7")),
    "renal": ("24362-6", "肾功能", ("2160-0", "22664-7", "14933-6", "2823-3", "2951-2")),
    "lipid": ("57698-3", "血脂", ("2093-3", "14927-8", "14646-4", "13457-7")),
    "glucose": ("11502-2", "血糖+糖化血红蛋白", ("1558-6", "4548-4")),
}
# exam -> (LOINC, name, v2-0074 category, DICOM modality, SNOMED body site and its name,
#          series, instances per series, (findings, impression) to choose from).
EXAMS = {
    "chest_xr": ("36643-5", "胸部X线正侧位片", "RAD", "DX", "51185008", "胸部", 2, (1, 1), (
        ("两肺纹理清晰，未见实质性病变。心影大小形态正常。", "心肺膈未见明显异常。"),
        ("两肺纹理增多、增粗、紊乱。心影不大。", "两肺支气管炎性改变，请结合临床。"),
        ("右下肺野见斑片状模糊影，边缘不清。", "右下肺炎症，建议治疗后复查。"),
    )),
    "chest_ct": ("24627-2", "胸部CT平扫", "RAD", "CT", "51185008", "胸部", 4, (60, 320), (
        ("两肺野清晰，未见结节及实变影。纵隔未见肿大淋巴结。", "胸部CT平扫未见明显异常。"),
        ("右肺上叶尖段见磨玻璃小结节，直径约5mm，边界清。", "右肺上叶微小结节，建议年度复查。"),
        ("两肺散在条索影及小叶中心型肺气肿，支气管壁增厚。", "慢性支气管炎、肺气肿。"),
    )),
    "abdomen_us": ("24558-9", "上腹部超声", "US", "US", "818983003", "腹部", 1, (8, 20), (
        ("肝脏大小形态正常，实质回声均匀。胆囊壁光滑。胰、脾未见异常。", "肝胆胰脾未见明显异常。"),
        ("肝脏形态饱满，实质回声前场增强、后场衰减。", "脂肪肝（轻度）。"),
        ("胆囊内见一强回声团，约12×9mm，后伴声影，随体位移动。", "胆囊结石。"),
    )),
}  # fmt: skip
# A stay: (diagnosis, comorbidity, ICD-9-CM-3 code, procedure, department, course, meds).
STAYS = (
    ("I20.0", "I10", "36.07", "药物洗脱冠状动脉支架置入术", "心血管内科",
     "冠脉造影示前降支近段狭窄约90%，行PCI植入药物洗脱支架1枚，术后双联抗血小板、调脂、降压，"
     "胸痛未再发作。", (("阿司匹林肠溶片 100mg", DAILY), ("硫酸氢氯吡格雷片 75mg", DAILY))),
    ("J18.9", "J44.9", "93.94", "雾化吸入治疗", "呼吸内科",
     "予头孢曲松抗感染、化痰、雾化吸入治疗，体温正常，咳嗽咳痰减轻，复查胸片炎症吸收。",
     (("盐酸氨溴索片 30mg", TID), ("噻托溴铵粉吸入剂 18μg", "每日一次，每次1吸，吸入"))),
    ("K35.8", "", "47.01", "腹腔镜下阑尾切除术", "普外科",
     "急诊全麻下行腹腔镜阑尾切除术，病理示急性化脓性阑尾炎，术后抗感染、补液，切口愈合良好。",
     (("头孢克肟分散片 0.1g", "每日两次，每次1片，口服"),)),
    ("S72.0", "I10", "81.52", "人工股骨头置换术", "骨科",
     "腰硬联合麻醉下行人工股骨头置换术，术后抗凝、镇痛及康复训练，可扶助行器行走。",
     (("利伐沙班片 10mg", DAILY), ("碳酸钙D3片 600mg", DAILY))),
    ("I63.9", "I10", "99.10", "静脉溶栓治疗", "神经内科",
     "发病3小时内到院，头颅CT排除出血后予阿替普酶静脉溶栓，后抗血小板、调脂，肢体肌力逐渐恢复。",
     (("硫酸氢氯吡格雷片 75mg", DAILY), ("阿托伐他汀钙片 20mg", NIGHTLY))),
    ("K80.1", "", "51.23", "腹腔镜胆囊切除术", "普外科",
     "全麻下行腹腔镜胆囊切除术，手术顺利，术后补液、抑酸，进食后无不适。",
     (("熊去氧胆酸胶囊 250mg", "每日两次，每次1粒，口服"),)),
)  # fmt: skip
# Drug allergies a county clinic records, and the reaction that revealed them.
ALLERGENS = {"青霉素": "皮疹、瘙痒", "头孢菌素类": "荨麻疹", "磺胺类药物": "皮疹",
             "阿司匹林": "哮喘发作"}  # fmt: skip
CLASSES = {"AMB": "门诊", "IMP": "住院", "EMER": "急诊"}


class Options(TypedDict, total=False):
    doctor: str  # the doctor's name, as participant/author/requester display
    institution_name: str  # default: the demo county's name for institution_id
    # Name the patient by one identifier instead of Patient/{person_id}: the Bundle then has
    # a Patient entry with it. Either the ID card (system urn:oid:2.16.156.10011.1.3) or the
    # institution's number (system https://yilian.example/fhir/sid/local/{institution_id}).
    patient_identifier: Json | None


def _aware(t: datetime) -> datetime:
    return t.astimezone(CHINA_TZ) if t.tzinfo else t.replace(tzinfo=CHINA_TZ)


def _iso(t: datetime) -> str:
    return _aware(t).isoformat(timespec="seconds")


def _concept(system: str, code: str, display: str = "", text: str = "") -> Json:
    coding = {"system": system, "code": code} | ({"display": display} if display else {})
    return {"coding": [coding]} | ({"text": text} if text else {})


def _quantity(value: float, unit: str) -> Json:
    return {"value": value, "unit": UNIT_NAMES.get(unit, unit), "system": UCUM, "code": unit}


def _ref(url: str) -> Json:
    return {"reference": url}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


class _Bundle:
    """A Bundle under construction: entries with seeded urn:uuid fullUrls, one subject."""

    def __init__(self, kind: str, seed: Seed, person_id: str, institution_id: str,
                 doctor: str = "王芳", institution_name: str = "",
                 patient_identifier: Json | None = None) -> None:  # fmt: skip
        self.rng = random.Random(f"{kind}|{seed}|{person_id}|{institution_id}")
        self.seed, self.person_id, self.institution_id = seed, person_id, institution_id
        self.doctor, self.entries = doctor, list[Json]()
        name = institution_name or _institution(institution_id).get("name", "")
        org = {"reference": f"Organization/{institution_id}", "display": name}
        self.org = {k: v for k, v in org.items() if v}
        self.subject = _ref(f"Patient/{person_id}")
        if patient_identifier:
            patient = {"resourceType": "Patient", "identifier": [dict(patient_identifier)]}
            self.subject = _ref(self.add(patient))

    def add(self, resource: Json) -> str:
        url = f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}"
        clean = {k: v for k, v in resource.items() if v not in (None, "", [])}
        self.entries.append({"fullUrl": url, "resource": clean})
        return url

    def finish(self, prefix: str, timestamp: datetime, composition: Json | None = None) -> Json:
        who = hashlib.sha256(f"{self.person_id}|{self.institution_id}".encode()).hexdigest()[:10]
        seed = re.sub(r"[^A-Za-z0-9._:-]", "-", str(self.seed))[:40]
        entries = self.entries
        if composition is not None:  # a document: its Composition first, no requests
            self.add(composition)
            entries = [entries[-1], *entries[:-1]]
        else:
            for e in entries:
                rtype = e["resource"]["resourceType"]
                e["request"] = {"method": "POST", "url": rtype}
                if rtype == "Patient":  # create the patient only if the server lacks them
                    ident = e["resource"]["identifier"][0]
                    e["request"]["ifNoneExist"] = f"identifier={ident['system']}|{ident['value']}"
        return {
            "resourceType": "Bundle",
            "identifier": {"system": f"{SID}/document/{self.institution_id}",
                           "value": f"{prefix}-{seed}-{who}"},
            "type": "transaction" if composition is None else "document",
            "timestamp": _iso(timestamp), "entry": entries,
        }  # fmt: skip


def _institution(institution_id: str) -> dict[str, str]:
    return next((i for i in INSTITUTIONS if i["institution_id"] == institution_id), {})


def _sample(rng: random.Random, code: str, abnormal: float = 0.2) -> float:
    """A result, normal most of the time, else above (more often) or below the range."""
    _, _, low, high, decimals = TESTS[code]
    lo = low if low is not None else (high or 1) * 0.5
    hi = high if high is not None else lo * 1.8
    span, r = hi - lo, rng.random()
    if r < abnormal * 0.7 and high is not None:
        value = rng.uniform(hi, hi + 0.4 * span)
    elif r < abnormal and low is not None:
        value = rng.uniform(max(lo - 0.3 * span, lo * 0.5), lo)
    else:
        value = rng.uniform(lo, hi)
    return round(value, decimals) if decimals else round(value)


def _flag(code: str, value: float) -> str:
    _, _, low, high, _ = TESTS[code]
    if high is not None and value > high:
        return "H"
    return "L" if low is not None and value < low else "N"


def _interpretation(flag: str) -> list[Json]:
    display = {"H": "偏高", "L": "偏低", "N": "正常"}[flag]
    return [_concept(f"{HL7}v3-ObservationInterpretation", flag, display)]


def _ranged(code: str, value: float) -> Json:
    _, unit, low, high, _ = TESTS[code]
    if low is None and high is None:
        return {}
    ref = {k: _quantity(v, unit) for k, v in (("low", low), ("high", high)) if v is not None}
    return {"referenceRange": [ref], "interpretation": _interpretation(_flag(code, value))}


def _observation(b: _Bundle, code: str, value: float, when: datetime, category: str,
                 encounter: str | None = None, components: list[Json] | None = None,
                 ) -> str:  # fmt: skip
    name, unit = TESTS[code][:2]
    return b.add({
        "resourceType": "Observation", "status": "final",
        "category": [_concept(f"{HL7}observation-category", category)],
        "code": _concept(LOINC, code, name, name), "subject": b.subject,
        "encounter": _ref(encounter) if encounter else None, "effectiveDateTime": _iso(when),
        "valueQuantity": None if components else _quantity(value, unit),
        "component": components,
    } | ({} if components else _ranged(code, value)))  # fmt: skip


def _vitals(b: _Bundle, when: datetime, encounter: str, hypertensive: bool) -> list[str]:
    rng = b.rng
    systolic = rng.randint(128, 168) if hypertensive else rng.randint(104, 136)
    diastolic = min(systolic - 30, rng.randint(70, 98) if hypertensive else rng.randint(62, 86))
    pressures = (("8480-6", systolic), ("8462-4", diastolic))
    components = [{"code": _concept(LOINC, c, TESTS[c][0]), "valueQuantity": _quantity(v, "mm[Hg]")}
                  | _ranged(c, v) for c, v in pressures]  # fmt: skip
    bp = _observation(b, "85354-9", 0, when, "vital-signs", encounter, components)
    if any(_flag(c, v) == "H" for c, v in pressures):
        b.entries[-1]["resource"]["interpretation"] = _interpretation("H")
    others = (("8867-4", _sample(rng, "8867-4", 0.1)), ("8310-5", _sample(rng, "8310-5", 0.1)),
              ("29463-7", round(rng.uniform(48, 82), 1)))  # fmt: skip
    return [bp] + [_observation(b, c, v, when, "vital-signs", encounter) for c, v in others]


def _encounter(b: _Bundle, cls: str, start: datetime, end: datetime, department: str) -> Json:
    return {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": f"{HL7}v3-ActCode", "code": cls, "display": CLASSES[cls]},
        "serviceType": {"text": department}, "subject": b.subject,
        "participant": [{"individual": {"display": b.doctor}}],
        "period": {"start": _iso(start), "end": _iso(end)}, "serviceProvider": b.org,
    }  # fmt: skip


def _conditions(b: _Bundle, codes: list[str], when: datetime, enc: Json, url: str,
                resolve_acute: bool = False) -> list[str]:  # fmt: skip
    """The diagnoses, each pointing at the encounter, which lists them in rank order."""
    urls = []
    for code in codes:
        acute = code not in CHRONIC
        onset = when - timedelta(days=b.rng.randint(1, 3)) if code in ACUTE else None
        status = "resolved" if acute and resolve_acute else "active"
        category = "problem-list-item" if resolve_acute and not acute else "encounter-diagnosis"
        urls.append(b.add({
            "resourceType": "Condition",
            "clinicalStatus": _concept(f"{HL7}condition-clinical", status),
            "verificationStatus": _concept(f"{HL7}condition-ver-status", "confirmed"),
            "category": [_concept(f"{HL7}condition-category", category)],
            "code": _concept(ICD10, code, DIAGNOSES[code], DIAGNOSES[code]),
            "subject": b.subject, "encounter": _ref(url),
            "onsetDateTime": _iso(onset) if onset else None, "recordedDate": _iso(when),
            "recorder": {"display": b.doctor},
        }))  # fmt: skip
    enc["diagnosis"] = [{"condition": _ref(u), "rank": i + 1} for i, u in enumerate(urls)]
    for entry in b.entries:  # the bundle holds a copy of the encounter: list them there too
        if entry["fullUrl"] == url:
            entry["resource"]["diagnosis"] = enc["diagnosis"]
    return urls


def _medication(b: _Bundle, drug: str, dosage: str, when: datetime, encounter: str,
                days: int, status: str = "active") -> str:  # fmt: skip
    return b.add({
        "resourceType": "MedicationRequest", "status": status, "intent": "order",
        "medicationCodeableConcept": {"text": drug}, "subject": b.subject,
        "encounter": _ref(encounter), "authoredOn": _iso(when),
        "requester": {"display": b.doctor}, "dosageInstruction": [{"text": dosage}],
        "dispenseRequest": {
            "validityPeriod": {"start": when.date().isoformat(),
                               "end": (when + timedelta(days=days)).date().isoformat()},
            "expectedSupplyDuration": {"value": days, "unit": "天", "system": UCUM, "code": "d"},
        },
    })  # fmt: skip


def _letter(b: _Bundle, loinc: str, title: str, text: str, when: datetime, enc: str) -> str:
    attachment = {"contentType": TEXT_PLAIN, "language": "zh-CN", "title": title,
                  "data": _b64(text), "creation": _iso(when)}  # fmt: skip
    return b.add({
        "resourceType": "DocumentReference", "status": "current", "docStatus": "final",
        "type": _concept(LOINC, loinc, title, title), "subject": b.subject, "date": _iso(when),
        "author": [{"display": b.doctor}], "custodian": b.org, "description": title,
        "content": [{"attachment": attachment}], "context": {"encounter": [_ref(enc)]},
    })  # fmt: skip


def _composition(b: _Bundle, loinc: str, title: str, when: datetime, encounter: str,
                 sections: dict[str, list[str]], about: list[str]) -> Json:  # fmt: skip
    return {
        "resourceType": "Composition", "status": "final",
        "type": _concept(LOINC, loinc, title, title), "subject": b.subject,
        "encounter": _ref(encounter), "date": _iso(when), "author": [{"display": b.doctor}],
        "title": f"{title}：{'、'.join(DIAGNOSES[c] for c in about)}", "custodian": b.org,
        "section": [{"title": t, "entry": [_ref(u) for u in urls]}
                    for t, urls in sections.items() if urls],
    }  # fmt: skip


def outpatient_visit(person_id: str, institution_id: str, *, seed: Seed, when: datetime,
                     diagnoses: list[str] | None = None, referral_to: str = "",
                     document: bool = False, **opts: Unpack[Options]) -> Json:  # fmt: skip
    """A clinic visit (AMB): 1-2 ICD-10 diagnoses (chosen, or from `diagnoses`), vital signs,
    a prescription per diagnosis; a referral letter (57133-1) when `referral_to` names where
    the patient is sent; a document Bundle (Composition 11506-3 first) when `document`."""
    b = _Bundle("opd", seed, person_id, institution_id, **opts)
    rng, when = b.rng, _aware(when)
    codes = diagnoses or rng.sample([rng.choice(CHRONIC), rng.choice(ACUTE)], rng.randint(1, 2))
    end = when + timedelta(minutes=rng.randint(8, 25))
    enc = _encounter(b, "AMB", when, end, "全科门诊")
    encounter = b.add(enc)
    conditions = _conditions(b, codes, when, enc, encounter)
    vitals = _vitals(b, when, encounter, hypertensive="I10" in codes)
    meds = []
    for code in [c for c in codes if c in PRESCRIPTIONS][:2]:
        drug, dosage = rng.choice(PRESCRIPTIONS[code])
        days, status = (28, "active") if code in CHRONIC else (5, "completed")
        meds.append(_medication(b, drug, dosage, end, encounter, days, status))
    letters = []
    if referral_to:
        text = (f"转诊记录\n就诊日期：{when:%Y-%m-%d}\n转出机构：{b.org.get('display', '')}\n"
                f"转入机构：{referral_to}\n初步诊断：{'、'.join(DIAGNOSES[c] for c in codes)}\n"
                f"转诊原因：病情需进一步检查及专科治疗。\n转诊医师：{b.doctor}")  # fmt: skip
        letters.append(_letter(b, "57133-1", "转诊记录", text, end, encounter))
    sections = {"诊断": conditions, "生命体征": vitals, "处方": meds, "转诊": letters}
    composition = _composition(b, "11506-3", "门诊病历", end, encounter, sections, codes)
    return b.finish("opd", end, composition if document else None)


def _stay(person_id: str, institution_id: str, seed: Seed, admitted: datetime, days: int,
          document: bool, opts: Options) -> Json:  # fmt: skip
    b = _Bundle("ipd", seed, person_id, institution_id, **({"doctor": "陈明"} | opts))
    rng, admitted = b.rng, _aware(admitted)
    main, other, proc_code, proc_name, department, course, discharge_meds = rng.choice(STAYS)
    discharged = (admitted + timedelta(days=days)).replace(hour=rng.randint(9, 11), minute=0)
    discharged = max(discharged, admitted + timedelta(hours=4))
    enc = _encounter(b, "IMP", admitted, discharged, department)
    enc["hospitalization"] = {"dischargeDisposition": {"text": "医嘱离院"}}
    encounter = b.add(enc)
    codes = [c for c in (main, other) if c]
    conditions = _conditions(b, codes, admitted, enc, encounter, resolve_acute=True)
    vitals = _vitals(b, admitted + timedelta(minutes=30), encounter, "I10" in codes)
    performed = min(admitted + timedelta(hours=rng.randint(2, 30)), discharged)
    procedure = b.add({
        "resourceType": "Procedure", "status": "completed",
        "code": _concept(ICD9CM, proc_code, proc_name, proc_name), "subject": b.subject,
        "encounter": _ref(encounter), "performedDateTime": _iso(performed),
        "performer": [{"actor": {"display": b.doctor}}], "reasonReference": [_ref(conditions[0])],
    })  # fmt: skip
    meds = [_medication(b, d, s, discharged, encounter, 14) for d, s in discharge_meds]
    names = "；".join(DIAGNOSES[c] for c in codes)
    text = (f"出院小结\n科室：{department}\n入院日期：{admitted:%Y-%m-%d}\n"
            f"出院日期：{discharged:%Y-%m-%d}\n住院天数：{days}天\n入院诊断：{names}\n"
            f"出院诊断：{names}\n手术及操作：{proc_name}（ICD-9-CM-3 {proc_code}）\n"
            f"诊疗经过：{course}\n出院情况：一般情况可，生命体征平稳，予办理出院。\n"
            f"出院医嘱：{'；'.join(f'{d}，{s}' for d, s in discharge_meds)}；定期门诊随访。\n"
            f"住院医师：{b.doctor}")  # fmt: skip
    summary = _letter(b, "18842-5", "出院小结", text, discharged, encounter)
    sections = {"出院诊断": conditions, "手术及操作": [procedure], "入院生命体征": vitals,
                "出院带药": meds, "出院小结": [summary]}  # fmt: skip
    composition = _composition(b, "18842-5", "出院小结", discharged, encounter, sections, codes)
    return b.finish("dis" if document else "ipd", discharged, composition if document else None)


def inpatient_stay(person_id: str, institution_id: str, *, seed: Seed, admitted: datetime,
                   days: int = 7, **opts: Unpack[Options]) -> Json:  # fmt: skip
    """A hospital stay (IMP) of `days` days: diagnoses, one ICD-9-CM-3 procedure, admission
    vitals, the discharge summary (DocumentReference 18842-5) and the discharge medication."""
    return _stay(person_id, institution_id, seed, admitted, days, False, opts)


def discharge_document(person_id: str, institution_id: str, *, seed: Seed, admitted: datetime,
                       days: int = 7, **opts: Unpack[Options]) -> Json:  # fmt: skip
    """`inpatient_stay`'s content as a document Bundle, its Composition (18842-5) first."""
    return _stay(person_id, institution_id, seed, admitted, days, True, opts)


def lab_report(person_id: str, institution_id: str, *, seed: Seed, when: datetime,
               panel: str = "cbc", **opts: Unpack[Options]) -> Json:  # fmt: skip
    """A laboratory report (DiagnosticReport LAB) and its results, some out of range."""
    b = _Bundle(f"lab-{panel}", seed, person_id, institution_id, **opts)
    when, (code, name, tests) = _aware(when), PANELS[panel]
    values = {t: _sample(b.rng, t) for t in tests}
    results = [_observation(b, t, v, when, "laboratory") for t, v in values.items()]
    flagged = "、".join(TESTS[t][0] for t, v in values.items() if _flag(t, v) != "N")
    issued = when + timedelta(hours=b.rng.randint(1, 4))
    b.add({
        "resourceType": "DiagnosticReport", "status": "final",
        "category": [_concept(f"{HL7}v2-0074", "LAB", "检验")],
        "code": _concept(LOINC, code, name, name), "subject": b.subject,
        "effectiveDateTime": _iso(when), "issued": _iso(issued),
        "performer": [{"display": b.doctor}, b.org], "result": [_ref(u) for u in results],
        "conclusion": f"{flagged}异常，请结合临床。" if flagged else "各项指标在参考范围内。",
    })  # fmt: skip
    return b.finish(f"lab{panel[:3]}", issued)


def imaging_report(person_id: str, institution_id: str, *, seed: Seed, when: datetime,
                   exam: str = "chest_xr", **opts: Unpack[Options]) -> Json:  # fmt: skip
    """An imaging report (DiagnosticReport RAD/US) and the ImagingStudy it reads."""
    b = _Bundle(f"img-{exam}", seed, person_id, institution_id, **({"doctor": "黄涛"} | opts))
    rng, when = b.rng, _aware(when)
    code, name, category, modality, site, site_name, n_series, per_series, reads = EXAMS[exam]
    findings, impression = rng.choice(reads)
    uid = f"1.2.156.112605.{rng.randrange(10**9, 10**10)}.{int(when.timestamp())}"
    counts = [rng.randint(*per_series) for _ in range(rng.randint(1, n_series))]
    mod = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality}
    body = {"system": "http://snomed.info/sct", "code": site, "display": site_name}
    study = b.add({
        "resourceType": "ImagingStudy", "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "modality": [mod], "subject": b.subject, "started": _iso(when),
        "numberOfSeries": len(counts), "numberOfInstances": sum(counts),
        "procedureCode": [_concept(LOINC, code, name, name)], "description": name,
        "series": [{"uid": f"{uid}.{i + 1}", "number": i + 1, "modality": mod,
                    "numberOfInstances": n, "bodySite": body} for i, n in enumerate(counts)],
    })  # fmt: skip
    issued = when + timedelta(minutes=rng.randint(30, 180))
    text = f"检查项目：{name}\n检查所见：{findings}\n诊断意见：{impression}"
    report = {"contentType": TEXT_PLAIN, "language": "zh-CN", "title": f"{name}报告",
              "data": _b64(text)}  # fmt: skip
    b.add({
        "resourceType": "DiagnosticReport", "status": "final",
        "category": [_concept(f"{HL7}v2-0074", category)],
        "code": _concept(LOINC, code, name, name), "subject": b.subject,
        "effectiveDateTime": _iso(when), "issued": _iso(issued),
        "performer": [{"display": b.doctor}, b.org], "imagingStudy": [_ref(study)],
        "conclusion": impression, "presentedForm": [report],
    })  # fmt: skip
    return b.finish(f"img{modality.lower()}", issued)


def allergy_record(person_id: str, institution_id: str, *, seed: Seed, when: datetime,
                   substance: str = "青霉素", **opts: Unpack[Options]) -> Json:  # fmt: skip
    """A drug allergy (AllergyIntolerance, one of ALLERGENS) the clinic recorded."""
    b = _Bundle("alg", seed, person_id, institution_id, **opts)
    reaction = ALLERGENS[substance]
    b.add({
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": _concept(f"{HL7}allergyintolerance-clinical", "active"),
        "verificationStatus": _concept(f"{HL7}allergyintolerance-verification", "confirmed"),
        "type": "allergy", "category": ["medication"],
        "criticality": b.rng.choice(["high", "low"]), "code": {"text": substance},
        "patient": b.subject, "recordedDate": _iso(when), "recorder": {"display": b.doctor},
        "reaction": [{"manifestation": [{"text": reaction}], "severity": "moderate"}],
    })  # fmt: skip
    return b.finish("alg", when)


def bundle_with_entries(person_id: str, institution_id: str, *, seed: Seed, n_entries: int = 50,
                        when: datetime, **opts: Unpack[Options]) -> Json:  # fmt: skip
    """An outpatient visit padded with lab Observations to exactly `n_entries` entries."""
    bundle = outpatient_visit(person_id, institution_id, seed=seed, when=when, **opts)
    entries = bundle["entry"]
    if n_entries < len(entries):
        raise ValueError(f"this visit has {len(entries)} entries; ask for at least as many")
    encounter = next(e for e in entries if e["resource"]["resourceType"] == "Encounter")
    pad = _Bundle("pad", seed, person_id, institution_id)
    pad.subject = encounter["resource"]["subject"]
    labs = [t for p in PANELS.values() for t in p[2]]
    for i in range(n_entries - len(entries)):
        code = labs[i % len(labs)]
        _observation(pad, code, _sample(pad.rng, code), _aware(when), "laboratory",
                     encounter["fullUrl"])  # fmt: skip
    bundle["entry"] += [e | {"request": {"method": "POST", "url": "Observation"}}
                        for e in pad.entries]  # fmt: skip
    ident = bundle["identifier"]
    ident["value"] = f"b{n_entries}-" + ident["value"].removeprefix("opd-")
    return bundle


def history_for(person_id: str, institution_ids: list[str], *, seed: Seed, n_documents: int,
                today: date, birth_date: date) -> list[Json]:  # fmt: skip
    """A plausible history over up to eight years: chronic follow-ups and acute visits at the
    clinics, labs, imaging and the odd stay at a hospital (its ward labs while it lasts), an
    allergy noted once; oldest first, every date between `birth_date` and `today`."""
    rng = random.Random(f"history|{seed}|{person_id}")
    first = max(birth_date + timedelta(days=30), today - timedelta(days=365 * 8))
    last, stays_fit = today - timedelta(days=16), True  # a stay of 14 days ends before today
    if last <= first:
        if (today - birth_date).days < 5:
            raise ValueError("a history needs a person at least five days old")
        first, last, stays_fit = birth_date + timedelta(days=3), today - timedelta(days=1), False
    window = max(1, (last - first).days)
    offsets = (rng.sample(range(window), n_documents) if n_documents <= window
               else rng.choices(range(window), k=n_documents))  # fmt: skip
    times = sorted(datetime.combine(first + timedelta(days=d),
                                    time(rng.choice((8, 9, 10, 14, 15, 16)), rng.randrange(60)),
                                    CHINA_TZ) for d in offsets)  # fmt: skip
    adult = (today - birth_date).days > 18 * 365
    problems = rng.sample(CHRONIC, rng.randint(1, 2)) if adult else []
    acute = ACUTE if adult else ("J06.9", "J20.9")
    hospitals = [i for i in institution_ids
                 if _institution(i).get("type") != "village_clinic"] or institution_ids  # fmt: skip
    docs: list[tuple[str, Json]] = []
    ward, ward_until = "", date.min
    for i, when in enumerate(times):
        when += timedelta(seconds=i)  # strictly increasing, even on a shared day
        site, hospital, roll = rng.choice(institution_ids), rng.choice(hospitals), rng.random()
        common: Json = {"seed": f"{seed}.{i}", "when": when}
        if when.date() < ward_until:
            b = lab_report(person_id, ward, panel=rng.choice(list(PANELS)), **common)
        elif i == 0 and n_documents > 3:
            b = allergy_record(person_id, site, substance=rng.choice(list(ALLERGENS)),
                               doctor=_doctor(rng, site), **common)  # fmt: skip
        elif roll < 0.06 and stays_fit and adult:
            days, stay = rng.randint(3, 14), rng.choice((inpatient_stay, discharge_document))
            b = stay(person_id, hospital, seed=f"{seed}.{i}", admitted=when, days=days,
                     doctor=_doctor(rng, hospital))  # fmt: skip
            ward, ward_until = hospital, (when + timedelta(days=days)).date()
        elif roll < 0.15:
            b = imaging_report(person_id, hospital, exam=rng.choice(list(EXAMS)), **common)
        elif roll < 0.40:
            b = lab_report(person_id, site, panel=rng.choice(list(PANELS)),
                           doctor=_doctor(rng, site), **common)  # fmt: skip
        else:
            sick = [rng.choice(acute)] if not problems or rng.random() < 0.25 else []
            referral = _institution(hospital).get("name", "") if rng.random() < 0.05 else ""
            b = outpatient_visit(person_id, site, diagnoses=(sick + problems)[:2],
                                 referral_to=referral, document=rng.random() < 0.2,
                                 doctor=_doctor(rng, site), **common)  # fmt: skip
        # a document is dated by its Composition (a discharge: the day the stay ended)
        docs.append((b["timestamp"] if b["type"] == "document" else _iso(when), b))
    return [b for _, b in sorted(docs, key=lambda pair: pair[0])]


def _doctor(rng: random.Random, institution_id: str) -> str:
    names = [d[1] for d in DOCTORS if d[2] == institution_id and d[5] == "doctor"]
    return rng.choice(names) if names else "王芳"
