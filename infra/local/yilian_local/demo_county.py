"""The demo county: 1 county hospital, 3 township health centres, 6 village clinics,
about 20 doctors and 200 residents with realistic names, valid ID numbers and a few
deliberate near-duplicates (homophone names, a transposed birth date, a missing ID card),
so the patient index's matching and review queue have real work to show.

Deterministic (a fixed random seed): every ./scripts/up shows the same county.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from yilian.domain.identity import id_check_digit

COUNTY_CODE = "330122"
DEMO_PASSWORD = "yilian-demo-2026"

INSTITUTIONS = [
    {"institution_id": "county-hospital", "name": "示范县人民医院", "type": "general_hospital",
     "address": "示范县城关镇人民路1号", "phone": "0571-88880000"},
    {"institution_id": "qiaotou", "name": "桥头镇卫生院", "type": "township_health_centre",
     "parent_id": "county-hospital", "address": "示范县桥头镇中街18号"},
    {"institution_id": "shimen", "name": "石门镇卫生院", "type": "township_health_centre",
     "parent_id": "county-hospital", "address": "示范县石门镇新建路6号"},
    {"institution_id": "qingshan", "name": "青山乡卫生院", "type": "township_health_centre",
     "parent_id": "county-hospital", "address": "示范县青山乡政府路2号"},
    {"institution_id": "qiaotou-lijia", "name": "桥头镇李家村卫生室", "type": "village_clinic",
     "parent_id": "qiaotou"},
    {"institution_id": "qiaotou-dongling", "name": "桥头镇东岭村卫生室", "type": "village_clinic",
     "parent_id": "qiaotou"},
    {"institution_id": "shimen-shangtang", "name": "石门镇上塘村卫生室", "type": "village_clinic",
     "parent_id": "shimen"},
    {"institution_id": "shimen-xikou", "name": "石门镇溪口村卫生室", "type": "village_clinic",
     "parent_id": "shimen"},
    {"institution_id": "qingshan-zhuwu", "name": "青山乡竹坞村卫生室", "type": "village_clinic",
     "parent_id": "qingshan"},
    {"institution_id": "qingshan-lingxia", "name": "青山乡岭下村卫生室", "type": "village_clinic",
     "parent_id": "qingshan"},
    # Out of the county: a referral partner (县域外), not a consortium member.
    {"institution_id": "city-first", "name": "市第一人民医院", "type": "regional_hospital",
     "address": "市区解放路88号", "phone": "0571-87000000"},
]  # fmt: skip

# Each row: username, name, institution, department, title (职称), role.
DOCTORS = [
    ("admin", "周建国", "county-hospital", "医务科", "主任医师", "consortium_admin"),
    ("chenming", "陈明", "county-hospital", "心血管内科", "主任医师", "doctor"),
    ("liuyan", "刘艳", "county-hospital", "神经内科", "副主任医师", "doctor"),
    ("zhaolei", "赵磊", "county-hospital", "骨科", "主治医师", "doctor"),
    ("sunli", "孙丽", "county-hospital", "妇产科", "副主任医师", "doctor"),
    ("wujun", "吴军", "county-hospital", "普外科", "主治医师", "doctor"),
    ("zhengjie", "郑洁", "county-hospital", "儿科", "主治医师", "doctor"),
    ("huangtao", "黄涛", "county-hospital", "放射科", "副主任医师", "doctor"),
    ("zhuanzhen", "蒋慧", "county-hospital", "转诊中心", "主管护师", "referral_centre"),
    ("hospadmin", "钱卫东", "county-hospital", "信息科", "工程师", "institution_admin"),
    ("wangfang", "王芳", "qiaotou", "全科", "主治医师", "doctor"),
    ("lihua", "李华", "qiaotou", "中医科", "主治医师", "doctor"),
    ("qiaotouadmin", "何志强", "qiaotou", "院办", "", "institution_admin"),
    ("zhanghong", "张红", "shimen", "全科", "主治医师", "doctor"),
    ("xugang", "徐刚", "shimen", "公共卫生科", "医师", "doctor"),
    ("yangmei", "杨梅", "qingshan", "全科", "主治医师", "doctor"),
    ("lijianguo", "李建国", "qiaotou-lijia", "全科", "乡村医生", "doctor"),
    ("chenguihua", "陈桂花", "qiaotou-dongling", "全科", "乡村医生", "doctor"),
    ("maqiang", "马强", "shimen-shangtang", "全科", "乡村医生", "doctor"),
    ("hulan", "胡兰", "shimen-xikou", "全科", "乡村医生", "doctor"),
    ("guoping", "郭平", "qingshan-zhuwu", "全科", "乡村医生", "doctor"),
    ("luoyong", "罗勇", "qingshan-lingxia", "全科", "乡村医生", "doctor"),
]

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董潘袁蔡蒋余于杜叶程"
)
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰建国志红文斌辉宁燕春晓海波鹏飞"
# Homophone swaps a clerk makes when only the sound is heard: same pinyin, other character.
HOMOPHONES = dict(zip("伟芳静丽军明华红玉英涛杰敏平", "玮方婧莉君铭花宏钰瑛韬洁珉萍", strict=True))
VILLAGES = ["qiaotou-lijia", "qiaotou-dongling", "shimen-shangtang", "shimen-xikou",
            "qingshan-zhuwu", "qingshan-lingxia"]  # fmt: skip
VILLAGE_ADDRESS = {
    "qiaotou-lijia": "示范县桥头镇李家村", "qiaotou-dongling": "示范县桥头镇东岭村",
    "shimen-shangtang": "示范县石门镇上塘村", "shimen-xikou": "示范县石门镇溪口村",
    "qingshan-zhuwu": "示范县青山乡竹坞村", "qingshan-lingxia": "示范县青山乡岭下村",
}  # fmt: skip


def make_id_number(birth: date, sex: str, seq: int) -> str:
    """An 18-character resident ID number with a valid GB 11643 check digit."""
    order = seq % 500 * 2 + (1 if sex == "male" else 0)  # odd: male, even: female
    body = f"{COUNTY_CODE}{birth:%Y%m%d}{order:03d}"
    return body + id_check_digit(body)


@dataclass
class Resident:
    name: str
    sex: str
    birth_date: str
    phone: str
    address: str
    registered_at: str  # the institution whose local patient number this is
    local_number: str
    id_card: str | None
    household: str
    duplicate_of: int | None = None  # index of the resident this near-duplicate repeats
    note: str = ""
    identifiers: list[dict[str, str]] = field(default_factory=list)

    def registration(self) -> dict:
        ids = [{"type": "local", "value": self.local_number, "assigner": self.registered_at}]
        if self.id_card:
            ids.insert(0, {"type": "id_card", "value": self.id_card})
        return {
            "name": self.name, "sex": self.sex, "birth_date": self.birth_date,
            "phone": self.phone, "address": self.address, "household": self.household,
            "identifiers": ids,
        }  # fmt: skip


def residents(n: int = 200, seed: int = 20261123) -> list[Resident]:
    rng = random.Random(seed)
    out: list[Resident] = []
    for i in range(n):
        sex = rng.choice(["male", "female"])
        birth = date(1938, 1, 1) + timedelta(days=rng.randrange(0, 365 * 84))
        given = "".join(rng.choice(GIVEN) for _ in range(rng.choice([1, 2, 2])))
        village = VILLAGES[i % len(VILLAGES)]
        phone = f"1{rng.choice('3589')}{rng.randrange(10**9):09d}"
        out.append(
            Resident(
                name=rng.choice(SURNAMES) + given,
                sex=sex,
                birth_date=birth.isoformat(),
                phone=phone,
                address=f"{VILLAGE_ADDRESS[village]}{rng.randrange(1, 120)}号",
                registered_at=village,
                local_number=f"V{i + 1:05d}",
                id_card=make_id_number(birth, sex, i),
                household=f"HH{i // 3 + 1:04d}",
            )  # fmt: skip
        )
    return out + near_duplicates(out)


def near_duplicates(people: list[Resident]) -> list[Resident]:
    """The same people registered again at their township centre, the way it really goes
    wrong: a homophone character and no ID card; a day/month transposed; a new phone."""
    dups = []
    for k, idx in enumerate([3, 17, 42, 77, 120, 150]):
        p = people[idx]
        township = p.registered_at.split("-")[0]
        name, birth, phone, note = p.name, p.birth_date, p.phone, ""
        if k % 3 == 0:
            name = p.name[0] + "".join(HOMOPHONES.get(ch, ch) for ch in p.name[1:])
            note = "homophone name, no ID card"
        elif k % 3 == 1:
            y, m, d = birth.split("-")
            if int(d) <= 12 and d != m:
                birth = f"{y}-{d}-{m}"
                note = "day and month transposed, no ID card"
            else:
                note = "no ID card"
        else:
            phone = p.phone[:-4] + "0000"
            note = "new phone, no ID card"
        dups.append(
            Resident(
                name=name,
                sex=p.sex,
                birth_date=birth,
                phone=phone,
                address=p.address,
                registered_at=township,
                local_number=f"T{idx:05d}",
                id_card=None,
                household=p.household,
                duplicate_of=idx,
                note=note,
            )  # fmt: skip
        )
    return dups


def referral_times() -> dict[str, str]:
    """The relative times the demo referrals use, from now (Asia/Shanghai)."""
    from yilian.domain.clock import now

    tomorrow = (now() + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    return {
        "tomorrow_9am": tomorrow.isoformat(),
        "in_two_weeks": (now() + timedelta(days=14)).date().isoformat(),
    }


# A normal day at the referral centre: one of each state. "patient" indexes the registered
# residents; "then" are the actions that follow (user, action, body).
REFERRALS: list[dict] = [
    {
        "shows": "to review",
        "by": "lijianguo",
        "patient": 1,
        "body": {
            "direction": "up",
            "urgency": "routine",
            "target_institution_id": "county-hospital",
            "target_department": "心血管内科",
            "reason": "血压控制不佳，头晕加重",
            "diagnosis": {"code": "I10", "text": "特发性(原发性)高血压"},
            "clinical_summary": "三种降压药联用，血压仍 170/100 mmHg",
        },
        "then": [],
    },
    {
        "shows": "awaiting arrival",
        "by": "wangfang",
        "patient": 2,
        "body": {
            "direction": "up",
            "urgency": "urgent",
            "target_institution_id": "county-hospital",
            "target_department": "神经内科",
            "reason": "突发言语不清 2 小时",
            "diagnosis": {"code": "I63.9", "text": "脑梗死"},
            "clinical_summary": "右侧肢体乏力，NIHSS 4 分",
        },
        "then": [("liuyan", "accept", {"proposed_time": "{tomorrow_9am}", "note": "绿色通道"})],
    },
    {
        "shows": "arrived",
        "by": "zhanghong",
        "patient": 3,
        "body": {
            "direction": "up",
            "urgency": "routine",
            "target_institution_id": "county-hospital",
            "target_department": "骨科",
            "reason": "摔伤后髋部疼痛，不能行走",
            "diagnosis": {"code": "S72.0", "text": "股骨颈骨折"},
        },
        "then": [("zhaolei", "accept", {}), ("zhaolei", "arrive", {"note": "已入骨科病房"})],
    },
    {
        "shows": "more information requested",
        "by": "yangmei",
        "patient": 4,
        "body": {
            "direction": "up",
            "urgency": "routine",
            "target_institution_id": "county-hospital",
            "target_department": "心血管内科",
            "reason": "心悸反复发作",
            "diagnosis": {"code": "I48", "text": "心房颤动"},
        },
        "then": [("chenming", "request-info", {"question": "请补充近期心电图和甲功结果"})],
    },
    {
        "shows": "downward to acknowledge",
        "by": "chenming",
        "patient": 5,
        "body": {
            "direction": "down",
            "urgency": "routine",
            "target_institution_id": "qiaotou",
            "reason": "PCI 术后病情稳定，转回基层康复",
            "diagnosis": {"code": "I21.9", "text": "急性心肌梗死"},
            "discharge_summary": "PCI 术后第 7 天出院，双联抗血小板治疗中",
            "follow_up_plan": [
                {"item": "复查血脂、肝功能", "due_date": "{in_two_weeks}"},
                {"item": "血压、心率随访", "due_date": "{in_two_weeks}"},
            ],
        },
        "then": [],
    },
    {
        "shows": "out of county",
        "by": "chenming",
        "patient": 6,
        "body": {
            "direction": "up",
            "urgency": "routine",
            "target_institution_id": "city-first",
            "target_department": "心脏外科",
            "reason": "冠脉三支病变，需外科搭桥",
            "diagnosis": {"code": "I25.1", "text": "动脉硬化性心脏病"},
        },
        "then": [],
    },
]


def consultation_times() -> dict[str, str]:
    """The relative times the demo consultations use, from now (Asia/Shanghai)."""
    from yilian.domain.clock import now

    tomorrow = (now() + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    return {"tomorrow_10am": tomorrow.isoformat()}


# Remote consultations (远程会诊) at the county hospital's consultation centre (蒋慧,
# zhuanzhen): one of each kind of day. "patient" indexes the registered residents (0 is the
# demo resident); "then" are the steps that follow (user, action, body), each sent with the
# version the previous answer showed, as the web client does.
CONSULTATIONS: list[dict] = [
    {
        "shows": "completed MDT, signed report in the record",
        "by": "wangfang",
        "patient": 0,
        "body": {
            "kind": "mdt", "mode": "written", "specialty": "心血管内科,神经内科,放射科",
            "question": "反复胸闷伴头晕半年，加重1周，请多学科会诊明确诊断及治疗方案",
            "summary": "74岁女性，高血压病史20年，规律服用氨氯地平。近半年反复胸闷、头晕，"
                       "活动后加重。心电图：ST-T改变；头颅CT：腔隙性脑梗死。",
        },
        "then": [
            ("zhuanzhen", "accept", {"experts": [{"doctor_id": "doc-chenming", "lead": True},
                                                 {"doctor_id": "doc-liuyan"},
                                                 {"doctor_id": "doc-huangtao"}]}),
            ("chenming", "respond", {"answer": "accept"}),
            ("liuyan", "respond", {"answer": "accept"}),
            ("huangtao", "respond", {"answer": "accept"}),
            ("liuyan", "opinion", {"findings": "头晕考虑后循环缺血，腔隙性脑梗死",
                                   "recommendations": "阿司匹林、他汀二级预防，控制血压"}),
            ("huangtao", "opinion", {"findings": "头颅CT示双侧基底节区腔隙灶，无出血",
                                     "recommendations": "必要时头颅MRI及颈动脉超声"}),
            ("chenming", "sign", {"findings": "稳定型心绞痛可能；高血压病3级（很高危）；"
                                              "腔隙性脑梗死",
                                  "recommendations": "冠脉CTA；加用美托洛尔；阿司匹林、"
                                                     "阿托伐他汀；2周后乡镇卫生院随访血压"}),
            ("wangfang", "acknowledge", {"note": "已告知患者及家属"}),
        ],
    },
    {
        "shows": "awaiting the invited expert",
        "by": "zhanghong",
        "patient": 8,
        "body": {
            "kind": "routine", "mode": "written", "specialty": "骨科",
            "question": "腰痛伴左下肢麻木1月，是否需要手术",
            "summary": "48岁女性，腰痛伴左下肢放射痛、麻木1月，直腿抬高试验阳性（左60°）。",
        },
        "then": [("zhuanzhen", "accept", {"experts": [{"doctor_id": "doc-zhaolei"}]})],
    },
    {
        "shows": "video session tomorrow 10:00, join links",
        "by": "yangmei",
        "patient": 10,
        "body": {
            "kind": "routine", "mode": "video", "specialty": "神经内科",
            "question": "双手震颤2年，加重3月，帕金森病待排",
            "summary": "66岁女性，静止性震颤，动作迟缓，无明显肌强直。",
            "preferred_times": ["{tomorrow_10am}"],
        },
        "then": [
            ("zhuanzhen", "accept", {"experts": [{"doctor_id": "doc-liuyan"}]}),
            ("liuyan", "respond", {"answer": "accept"}),
            ("zhuanzhen", "schedule", {"start": "{tomorrow_10am}", "minutes": 30}),
        ],
    },
    {
        "shows": "urgent, to review",
        "by": "wangfang",
        "patient": 1,
        "body": {
            "kind": "urgent", "mode": "written", "specialty": "心血管内科",
            "question": "突发胸痛2小时，急性冠脉综合征待排，是否需要转诊",
            "summary": "86岁男性，突发胸骨后压榨样疼痛2小时，伴大汗。心电图：V1-V4 ST段抬高。",
        },
        "then": [],
    },
]  # fmt: skip


# Weekly schedules (排班): (admin who publishes, template). Weekdays 1 = Monday.
def _weekly(
    doctor: str,
    department: str,
    days: range | tuple[int, ...],
    period: str,
    start: str,
    end: str,
    capacity: int,
    visit_type: str,
    fee_cents: int,
) -> list[dict]:
    return [
        {"doctor_id": f"doc-{doctor}", "department": department, "weekday": day,
         "period": period, "start": start, "end": end, "slot_minutes": 60,
         "capacity": capacity, "visit_type": visit_type, "fee_cents": fee_cents}
        for day in days
    ]  # fmt: skip


WEEKDAYS = range(1, 6)
SCHEDULES: list[tuple[str, dict]] = [
    *(("hospadmin", t) for t in _weekly("chenming", "心血管内科", WEEKDAYS, "am", "08:00",
                                          "11:00", 5, "specialist", 2500)),
    *(("hospadmin", t) for t in _weekly("liuyan", "神经内科", WEEKDAYS, "am", "08:00",
                                          "11:00", 5, "specialist", 2000)),
    *(("hospadmin", t) for t in _weekly("zhaolei", "骨科", (1, 3, 5), "pm", "14:00", "17:00",
                                          5, "specialist", 2000)),
    *(("hospadmin", t) for t in _weekly("zhengjie", "儿科", range(1, 8), "am", "08:00",
                                          "11:00", 8, "general", 1000)),
    *(("qiaotouadmin", t) for t in _weekly("wangfang", "全科", range(1, 8), "am", "08:00",
                                             "11:00", 10, "general", 0)),
]  # fmt: skip
# The cardiology department holds more for referrals than the consortium default (20%).
QUOTAS = [("hospadmin", {"department": "心血管内科", "reserved_share": 0.4, "release_hours": 48})]
SCHEDULE_WEEKS = 2


# Health records (健康档案): the residents (indexes of the registered residents) whose
# multi-year history the demo county's institutions contribute, each document submitted by a
# doctor of the institution that wrote it: their village clinic, its township health centre
# and the county hospital. Resident 0 is the demo resident; 1-6 have referrals, so the county
# hospital's doctors have a care relationship with them.
RECORDS: list[dict] = [
    {"patient": 0, "documents": 12, "shows": "the demo resident, chronic follow-ups"},
    {"patient": 1, "documents": 10, "shows": "referred for hypertension"},
    {"patient": 3, "documents": 8, "shows": "hip fracture, admitted"},
    {"patient": 6, "documents": 8, "shows": "a household with a child"},
    {"patient": 7, "documents": 6, "shows": "a child of ten"},
]
# Consents (授权): (patient, institution, days). The demo resident lets the demo doctor's
# village clinic read the whole record.
RECORD_CONSENTS = [(0, "qiaotou-lijia", 180)]
# Guardians (监护人): (child, guardian), both of household HH0003, recorded by the child's
# village clinic.
GUARDIANS = [(7, 8)]


def record_institutions(registered_at: str) -> list[str]:
    """Where a resident's documents come from: their clinic, its township, the county."""
    parent = next(i.get("parent_id") for i in INSTITUTIONS if i["institution_id"] == registered_at)
    return [i for i in (registered_at, parent, "county-hospital") if i]
