"""The consortium's institution directory: who belongs to the network and where doctors work.

Tiers follow the consortium's structure: the county hospital leads, township health centres
serve the townships, village clinics are the first contact. A referral goes up or down these
tiers, so every institution knows its tier and its parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Tier(StrEnum):
    COUNTY = "county"  # 县级: county hospital, TCM hospital, maternal & child
    TOWNSHIP = "township"  # 乡镇: township health centre, community health centre
    VILLAGE = "village"  # 村: village clinic, community health station
    REGIONAL = "regional"  # 县域外: a city or provincial hospital the county refers out to


TIER_RANK = {Tier.VILLAGE: 0, Tier.TOWNSHIP: 1, Tier.COUNTY: 2, Tier.REGIONAL: 3}
# Outside the county: a referral partner listed in the directory, not a consortium member.
# Referrals to it count as out-of-county (县域外转诊) in the statistics.
IN_COUNTY_TIERS = frozenset({Tier.VILLAGE, Tier.TOWNSHIP, Tier.COUNTY})


class InstitutionType(StrEnum):
    GENERAL_HOSPITAL = "general_hospital"  # 县人民医院
    TCM_HOSPITAL = "tcm_hospital"  # 县中医院
    MATERNAL_CHILD = "maternal_child"  # 妇幼保健院
    TOWNSHIP_HEALTH_CENTRE = "township_health_centre"  # 乡镇卫生院
    COMMUNITY_HEALTH_CENTRE = "community_health_centre"  # 社区卫生服务中心
    VILLAGE_CLINIC = "village_clinic"  # 村卫生室
    COMMUNITY_HEALTH_STATION = "community_health_station"  # 社区卫生服务站
    REGIONAL_HOSPITAL = "regional_hospital"  # 县域外医院 (市/省级)


@dataclass(frozen=True, slots=True)
class Institution:
    institution_id: str
    consortium_id: str
    name: str
    tier: Tier
    type: InstitutionType
    parent_id: str | None = None
    code: str = ""  # 组织机构代码 / unified social credit code
    address: str = ""
    phone: str = ""
    active: bool = True

    @property
    def in_county(self) -> bool:
        return self.tier in IN_COUNTY_TIERS


@dataclass(frozen=True, slots=True)
class Doctor:
    doctor_id: str
    consortium_id: str
    institution_id: str
    name: str
    department: str
    title: str  # 职称: 主任医师, 副主任医师, 主治医师, 住院医师, 乡村医生 ...
    phone: str = ""
    username: str = ""
    role: str = "doctor"  # doctor | institution_admin | consortium_admin | referral_centre
    active: bool = True
