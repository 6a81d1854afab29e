"""De-identified copies of instances for teaching and research (PS3.15 Annex E).

The Basic Application Level Confidentiality Profile with two options:

* Retain Longitudinal Temporal Information with Modified Dates: every DA/DT (in sequences too)
  moves by the same number of days, times of day are kept, so intervals survive.
* Retain Patient Characteristics: age, sex, size and weight stay (research needs them).

The profile is data (`ACTIONS`, keyword -> action) applied by one walk over the data set:
X remove, Z empty, D dummy value, U remap UID, K keep. Everything private goes, and so do curves
(50xx), overlay data and comments (60xx,3000/4000). Any person name the table does not know is
emptied, as a safety net. Instance UIDs are remapped through `uid_map` so all instances of a
study (and their references to each other) stay consistent.

Pixel data is kept as it is: burned-in text is not detected. `burned_in_risk` flags the
instances (ultrasound, secondary capture, BurnedInAnnotation YES) a person should look at or
leave out of an export.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from datetime import date, timedelta
from typing import Any, Final, Literal

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, generate_uid

Action = Literal["X", "Z", "D", "U", "K"]

# LO is at most 64 characters a value, so the description is multi-valued.
DEIDENTIFICATION_METHOD: Final = (
    "PS3.15 Basic Application Level Confidentiality Profile",
    "dates shifted",
    "patient characteristics retained",
)
METHOD_CODES: Final = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)

_X: Final = """
AccessionNumber:Z AcquisitionComments AcquisitionContextSequence
AcquisitionDeviceProcessingDescription AcquisitionProtocolDescription
ActualHumanPerformersSequence AdditionalPatientHistory AdmissionID
AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription Allergies Arbitrary
AuthorObserverSequence BranchOfService CassetteID CommentsOnThePerformedProcedureStep
ConfidentialityConstraintOnPatientDataDescription ContentCreatorIdentificationCodeSequence
ContentCreatorName:Z ContributionDescription CountryOfResidence CurrentPatientLocation
CustodialOrganizationSequence DataSetTrailingPadding DerivationDescription DetectorID
DeviceSerialNumber DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress
DistributionName EthnicGroup FillerOrderNumberImagingServiceRequest FrameComments GantryID
GeneratorID HumanPerformerName HumanPerformerOrganization IconImageSequence IdentifyingComments
ImageComments ImagePresentationComments ImagingServiceRequestComments Impressions
InstitutionAddress InstitutionCodeSequence InstitutionName InstitutionalDepartmentName
InsurancePlanIdentification IntendedRecipientsOfResultsIdentificationSequence
InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription
InterpretationIDIssuer InterpretationRecorder InterpretationText InterpretationTranscriber
IssuerOfAdmissionID IssuerOfPatientID IssuerOfPatientIDQualifiersSequence
IssuerOfServiceEpisodeID MedicalAlerts MedicalRecordLocator MilitaryRank
ModifiedAttributesSequence ModifiedImageDescription ModifyingDeviceID
ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy NamesOfIntendedRecipientsOfResults
Occupation OperatorIdentificationSequence OperatorsName OrderCallbackPhoneNumber
OrderCallbackTelecomInformation OrderEnteredBy OrderEntererLocation OriginalAttributesSequence
OtherPatientIDs OtherPatientIDsSequence OtherPatientNames ParticipantSequence PatientAddress
PatientBirthDate:Z PatientBirthName PatientBirthTime PatientComments PatientInstitutionResidence
PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
PatientPrimaryLanguageModifierCodeSequence PatientReligiousPreference PatientState
PatientTelecomInformation PatientTelephoneNumbers PatientTransportArrangements PerformedLocation
PerformedProcedureStepDescription PerformedProcedureStepID PerformedStationAETitle
PerformedStationGeographicLocationCodeSequence PerformedStationName
PerformedStationNameCodeSequence PerformingPhysicianIdentificationSequence
PerformingPhysicianName PersonAddress PersonIdentificationCodeSequence PersonName:D
PersonTelecomInformation PersonTelephoneNumbers PhysicianApprovingInterpretation
PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
PhysiciansReadingStudyIdentificationSequence PlacerOrderNumberImagingServiceRequest PlateID
PreMedication ProtocolName ReasonForStudy ReasonForTheImagingServiceRequest
ReferencedPatientAliasSequence ReferencedPatientPhotoSequence ReferencedPatientSequence
ReferencedPerformedProcedureStepSequence ReferringPhysicianAddress
ReferringPhysicianIdentificationSequence ReferringPhysicianName:Z
ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence
RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription
RequestedProcedureID RequestedProcedureLocation RequestingPhysician
RequestingPhysicianIdentificationSequence RequestingService ResponsibleOrganization
ResponsiblePerson ResponsiblePersonRole ResultsComments ResultsDistributionListSequence
ResultsIDIssuer ReviewerName ScheduledHumanPerformersSequence
ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
ScheduledPerformingPhysicianName ScheduledProcedureStepDescription
ScheduledProcedureStepLocation ScheduledStationAETitle
ScheduledStationGeographicLocationCodeSequence ScheduledStationName
ScheduledStationNameCodeSequence ScheduledStudyLocation ScheduledStudyLocationAETitle
SeriesDescription ServiceEpisodeDescription ServiceEpisodeID SourceApplicationEntityTitle
SpecialNeeds StationName StudyComments StudyDescription StudyID:Z StudyIDIssuer TextComments
TextString TopicAuthor TopicKeywords TopicSubject TopicTitle
VerifyingObserverIdentificationCodeSequence:Z VerifyingObserverName:D VerifyingOrganization
VisitComments
"""
# Kept although the basic profile removes them: the Retain Patient Characteristics Option.
_RETAINED_CHARACTERISTICS: Final = (
    "PatientAge PatientSex PatientSize PatientWeight PregnancyStatus SmokingStatus"
)


def _parse_actions(text: str) -> dict[str, Action]:
    actions: dict[str, Action] = {}
    for entry in text.split():
        keyword, _, action = entry.partition(":")
        actions[keyword] = action or "X"  # type: ignore[assignment]
    return actions


ACTIONS: Final[dict[str, Action]] = {
    **_parse_actions(_X),
    **dict.fromkeys(_RETAINED_CHARACTERISTICS.split(), "K"),
    "PatientName": "Z",  # then set to the subject code
    "PatientID": "Z",  # then set to the subject code
}
_DUMMY: Final = {"PN": "ANONYMOUS", "DA": "19000101", "DT": "19000101", "TM": "000000"}
_CURVE_GROUPS: Final = range(0x5000, 0x5100)
_OVERLAY_GROUPS: Final = range(0x6000, 0x6100)
_OVERLAY_TEXT_ELEMENTS: Final = (0x3000, 0x4000)  # Overlay Data, Overlay Comments

_KEPT_UID_KEYWORDS: Final = frozenset(
    {"TransferSyntaxUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "PrivateRecordUID"}
)

BURNED_IN_MODALITIES: Final = frozenset({"US", "ES", "XC", "OT", "SC", "GM", "SM"})
_SECONDARY_CAPTURE_CLASS_PREFIX: Final = "1.2.840.10008.5.1.4.1.1.7"


def _names_a_class(keyword: str) -> bool:
    """SOP classes, syntaxes and implementation UIDs identify software, not people: kept."""
    return keyword.endswith("ClassUID") or keyword in _KEPT_UID_KEYWORDS


def burned_in_risk(ds: Dataset) -> bool:
    """True when the pixels may carry burned-in patient text a person should check first.

    BurnedInAnnotation decides when present; otherwise ultrasound, endoscopy, photos and
    secondary captures are presumed at risk.
    """
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if burned in ("YES", "NO"):
        return burned == "YES"
    sop_class = str(ds.get("SOPClassUID", ""))
    return (
        str(ds.get("Modality", "")) in BURNED_IN_MODALITIES
        or sop_class.startswith(_SECONDARY_CAPTURE_CLASS_PREFIX)
        or "SECONDARY" in [str(v).upper() for v in ds.get("ImageType", []) or []]
    )


def deidentify(
    ds: Dataset,
    *,
    subject_code: str,
    date_shift_days: int,
    uid_map: dict[str, str] | None = None,
    uid_root: str = "2.25.",
    uid_secret: str | None = None,
) -> Dataset:
    """A de-identified copy of `ds`; `ds` itself is not changed.

    `uid_map` (original -> new) is read and filled: pass the same dict for every instance of a
    study so references agree. A new UID is random unless `uid_secret` is given, in which case
    it is derived from (secret, original UID), so a later export with the same secret agrees
    too; without the secret the mapping cannot be recomputed from the original UIDs.
    """
    mapping = {} if uid_map is None else uid_map
    walker = _Walker(
        shift=timedelta(days=date_shift_days),
        uid_map=mapping,
        uid_root=uid_root,
        uid_secret=uid_secret,
    )
    out = copy.deepcopy(ds)
    walker.clean(out)
    meta = getattr(out, "file_meta", None)
    if meta is not None:
        walker.clean(meta)
    out.PatientName = subject_code
    out.PatientID = subject_code
    out.PatientIdentityRemoved = "YES"
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    out.DeidentificationMethod = list(DEIDENTIFICATION_METHOD)
    out.DeidentificationMethodCodeSequence = Sequence(
        [_code(value, meaning) for value, meaning in METHOD_CODES]
    )
    return out


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


class _Walker:
    """One pass over a data set and its sequences, applying `ACTIONS` and the options."""

    def __init__(
        self,
        *,
        shift: timedelta,
        uid_map: dict[str, str],
        uid_root: str,
        uid_secret: str | None,
    ) -> None:
        self.shift = shift
        self.uid_map = uid_map
        self.uid_root = uid_root
        self.uid_secret = uid_secret

    def clean(self, dataset: Dataset) -> None:
        for tag in list(dataset.keys()):
            if self._removed_by_group(tag):
                del dataset[tag]
                continue
            elem = dataset[tag]
            action = ACTIONS.get(elem.keyword, "K")
            if action == "X":
                del dataset[tag]
            elif action == "Z" or elem.VR == "PN":  # unknown names: emptied all the same
                elem.value = Sequence() if elem.VR == "SQ" else ""
            elif action == "D":
                elem.value = Sequence() if elem.VR == "SQ" else _DUMMY.get(elem.VR, "REMOVED")
            elif elem.VR == "SQ":
                for item in elem.value:
                    self.clean(item)
            elif elem.VR in ("DA", "DT"):
                elem.value = self._shift_dates(elem.value, elem.VR)
            elif elem.VR == "UI" and not _names_a_class(elem.keyword):
                elem.value = self._remap_uids(elem.value)

    @staticmethod
    def _removed_by_group(tag: BaseTag) -> bool:
        if tag.is_private or tag.group in _CURVE_GROUPS:
            return True
        return tag.group in _OVERLAY_GROUPS and tag.element in _OVERLAY_TEXT_ELEMENTS

    def _shift_dates(self, value: Any, vr: str) -> Any:
        if value is None or isinstance(value, str):
            return self._shift_one(value or "", vr)
        return [self._shift_one(str(v), vr) for v in value]

    def _shift_one(self, value: str, vr: str) -> str:
        """Shift YYYYMMDD (DA, or the head of a DT); anything unparseable is emptied."""
        text = value.strip()
        if not text:
            return text
        try:
            day = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        except ValueError:
            return ""
        shifted = (day + self.shift).strftime("%Y%m%d")
        return shifted + text[8:] if vr == "DT" else shifted

    def _remap_uids(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return self._remap_one(value or "")
        return [self._remap_one(str(v)) for v in value]

    def _remap_one(self, original: str) -> str:
        """Instance UIDs are replaced; registered ones (SOP classes, syntaxes) are kept."""
        original = original.strip()
        if not original or UID(original).name != original:  # empty, or a registered UID
            return original
        if original not in self.uid_map:
            self.uid_map[original] = self._new_uid(original)
        return self.uid_map[original]

    def _new_uid(self, original: str) -> str:
        """Random, or HMAC(secret, original) as a 128-bit number when a secret is given.

        Not generate_uid(prefix=None, entropy_srcs=...): pydicom ignores the entropy when the
        prefix is None and returns a random 2.25 UID.
        """
        if self.uid_secret is None:
            return str(generate_uid(prefix=None if self.uid_root == "2.25." else self.uid_root))
        digest = hmac.new(self.uid_secret.encode(), original.encode(), hashlib.sha256).digest()
        return (self.uid_root + str(int.from_bytes(digest[:16], "big")))[:64]
