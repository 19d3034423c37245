"""A synthetic corpus for the de-identification scrubber: every identifier is invented.

Notes are written with inline marks: ``{KIND:text}`` is a planted identifier of a HIPAA Safe Harbor kind and
``[[text]]`` a clinical phrase that must come out untouched. :func:`corpus` strips the marks and returns the
exact spans, so recall is computed per identifier, not guessed from the output.

How it was used, so the figures can be read for what they are: notes 1-19 were written first and the scrubber
was developed against them (its first version found 82% of their identifiers); notes 20-25 were then written
and scored before any change for them (44 of 48 found, 92%), and notes 26-28 likewise (19 of 23, 83%); the
misses of both batches were then fixed with general rules (a plate with a state prefix, a street without a
number, "turned ninety-five", "we live in el paso", "daughter , rosa"), never by special-casing a value.

Kinds (Safe Harbor §164.514(b)(2)(i) (A)-(R)): NAME, GEO, DATE, AGE (ages over 89, part of (C)), PHONE, FAX,
EMAIL, SSN, MRN, HEALTH_PLAN, ACCOUNT, LICENSE, VEHICLE, DEVICE, URL, IP, BIOMETRIC, PHOTO, OTHER_ID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = (
    "NAME", "GEO", "DATE", "AGE", "PHONE", "FAX", "EMAIL", "SSN", "MRN", "HEALTH_PLAN", "ACCOUNT", "LICENSE",
    "VEHICLE", "DEVICE", "URL", "IP", "BIOMETRIC", "PHOTO", "OTHER_ID",
)  # fmt: skip

NOTES = [
    # 1: a classic header; "Smith, John" shape, CC and family history with clinical words after the cues
    """PATIENT: {NAME:Smith}, {NAME:John} A.   MRN: {MRN:00482913}   DOB: {DATE:03/14/1961}
CC: [[chest pain]] and [[shortness of breath]].
Mother: [[breast cancer]] at 52. Father: [[diabetes mellitus]], [[coronary artery disease]].
HPI: 61-year-old man seen on {DATE:5-Mar-2023} for [[chest pain]] radiating to the left arm. {NAME:Smith} denies
[[syncope]]. Lives at {GEO:1234 Oak Street, Apt 5B}, {GEO:Springfield, IL 62704}. Phone {PHONE:(415) 555-0134}.
Plan: [[troponin]] q6h, [[aspirin]] 325 mg.""",
    # 2: surnames that are English words next to the clinical words they spell
    """Mr. {NAME:Stone} is a 45-year-old with a [[kidney stone]] of 7 mm in the left ureter.
His wife, {NAME:Linda Brown}, reports [[brown urine]] since {DATE:April 2}. Labs: [[white blood cell]] count
11.2, [[red blood cell]] casts absent. Seen by Dr. {NAME:Angela White} and Dr. {NAME:Marcus Black}.
[[Stone]] analysis pending. [[Gross hematuria]] resolved. Follow-up with Dr. {NAME:White} on {DATE:June 14, 2023}.""",
    # 3: names without any cue word
    """{NAME:Alvarez} has [[chest pain]] and [[nausea]] since this morning. {NAME:Brian Okafor} drove him in.
Accompanied by {NAME:Priya Raman}; {NAME:Okafor} will call back at {PHONE:617-555-0123}.
[[Parkinson disease]] and [[Graves disease]] in the past history; [[Down syndrome]] in a sibling.
Email {EMAIL:b.okafor77@example.org}.""",
    # 4: a lower-cased dialogue (ACI-Bench style)
    """[doctor] hi , {NAME:brian} . how are you today ?
[patient] good . my wife {NAME:maria} says i snore . my name is {NAME:brian} {NAME:kowalski} .
[doctor] okay . did dr. {NAME:patel} see you ? she is with {NAME:kevin nguyen} now .
[patient] yes , on {DATE:march 3rd} . you can text me at {PHONE:312 555 0198} .
[doctor] any [[chest pain]] or [[shortness of breath]] ? your [[blood pressure]] is 142/88 .""",
    # 5: dates in many shapes, ages over 89 in digits and words
    """{NAME:Eleanor Whitfield} is a {AGE:ninety-two} year old woman with [[atrial fibrillation]].
Her sister, aged {AGE:ninety-seven}, has [[Alzheimer disease]]. Husband died at {AGE:101} years of age.
Admitted {DATE:2023-04-01}, discharged {DATE:4/15/23}; follow-up {DATE:12 Jan 2024} and {DATE:Jan. 20, 2024}.
Prior visit the {DATE:5th of March}; [[echocardiogram]] {DATE:07-JUN-2022}. Age: {AGE:94}.
She is {AGE:one hundred and two} years old per her son {NAME:Harold}.""",
    # 6: contact details and network identifiers
    """Clinic contact: {NAME:Rebecca Lindqvist}, RN. Tel {PHONE:+1 (202) 555-0147 ext. 23}, fax {FAX:202-555-0190}.
Fax results to {FAX:(202) 555-0111}. Portal: {URL:https://portal.example-health.org/patients/88213}.
Telehealth from IP {IP:203.0.113.45}; device IPv6 {IP:2001:db8:85a3::8a2e:370:7334}.
Records at {URL:www.example-clinic.com/records} and {EMAIL:r.lindqvist@example-health.org}.
[[Hypertension]] controlled on [[lisinopril]] 10 mg.""",
    # 7: insurance and account numbers
    """Insurance: Medicare MBI {HEALTH_PLAN:1EG4-TE5-MK73}; secondary BCBS member ID {HEALTH_PLAN:XJH482913377}.
Medicaid ID {HEALTH_PLAN:MC44812093}. Policy number {HEALTH_PLAN:PLN-5521-8803}.
Billing account {ACCOUNT:AC-77120}; account number {ACCOUNT:0012-3345-66}. SSN {SSN:123-45-6789}.
Patient {NAME:Gloria Fuentes} has [[type 2 diabetes mellitus]] and [[diabetic retinopathy]].""",
    # 8: licences and certificates
    """Prescriber: Dr. {NAME:Samuel Adeyemi}, DEA {LICENSE:BA1234563}, NPI {LICENSE:1234567893}.
State medical license {LICENSE:MD-448812}. Patient's driver's license {LICENSE:D1234-5678-9012}.
Death certificate number {LICENSE:2023-IL-004471} pending for the decedent's brother.
[[Hodgkin lymphoma]] in remission; [[non-Hodgkin lymphoma]] ruled out.""",
    # 9: vehicles
    """MVC: patient was the driver of a sedan, license plate {VEHICLE:7ABC123}, VIN {VEHICLE:1HGCM82633A004352}.
The other vehicle, plate {VEHICLE:XKT-4491}, VIN {VEHICLE:2T1BURHE0JC074512}, fled. Police report {OTHER_ID:RPT-2023-118842}.
[[Cervical strain]] and [[rib fracture]]; [[pneumothorax]] excluded. Tow to {GEO:88 Harbor Road}.""",
    # 10: devices
    """Pacemaker: Medtronic Azure, serial number {DEVICE:PJN482913S}, model {DEVICE:W1DR01}.
Insulin pump S/N {DEVICE:NG-88412-X}. Implant UDI {DEVICE:(01)00844588003288(17)141120(10)7654321D}.
Glucose sensor device ID {DEVICE:SN4471-0098}. [[Sick sinus syndrome]] and [[complete heart block]].""",
    # 11: accession and other unique numbers
    """Surgical pathology accession number {OTHER_ID:S23-04512}. Specimen ID {OTHER_ID:SP-23-00412}.
Radiology accession {OTHER_ID:RAD8841203}. Lab requisition {OTHER_ID:REQ-99812-7}. Encounter ID {MRN:ENC-44812093}.
Result: [[invasive ductal carcinoma]], [[estrogen receptor positive]]; [[sentinel lymph node]] negative.""",
    # 12: biometrics and photos
    """Identity verified by fingerprint template {BIOMETRIC:FP-88213-K} and retinal scan ID {BIOMETRIC:RS5521-0093}.
Voiceprint ID {BIOMETRIC:VP-3391-22}. Full-face photograph on file: {PHOTO:IMG_20230314_0932.jpg};
wound photo {PHOTO:wound_left_heel_0412.png}. [[Diabetic foot ulcer]] with [[cellulitis]].""",
    # 13: geography
    """Social history: lives alone in {GEO:Dayton}. Moved from {GEO:Cook County} last year; grew up in {GEO:Toledo}.
Mailing: {GEO:PO Box 4471}, {GEO:Kettering, OH 45429}. Zip code {GEO:45440}.
Works at the plant on {GEO:4550 W. Industrial Parkway}. [[Chronic obstructive pulmonary disease]], 40 pack-years.""",
    # 14: a discharge summary with credentials and signatures
    """DISCHARGE SUMMARY
Attending: {NAME:Catherine Mwangi}, MD   PCP: Dr. {NAME:Luis Ortega}
Date of admission: {DATE:February 27, 2024}. Date of discharge: {DATE:03/02/2024}.
[[Community-acquired pneumonia]] treated with [[ceftriaxone]] and [[azithromycin]]. [[Sepsis]] resolved.
Emergency contact: {NAME:Thomas Reilly} (son), {PHONE:555-201-8834}.
Electronically signed by: {NAME:Catherine Mwangi}, MD on {DATE:03/02/2024} 14:10""",
    # 15: relatives and eponyms in family history
    """Family history: Mother: [[breast cancer]], [[Hashimoto thyroiditis]]. Father: [[Parkinson's disease]].
Brother: [[Crohn's disease]]. Her daughter {NAME:Jessica} brings her; her son {NAME:Kevin} lives in {GEO:Phoenix}.
Sister has [[Graves disease]]; [[Cushing syndrome]] was ruled out. [[Tanner stage]] not applicable.
[[Bell palsy]] in 2019. [[Wolff-Parkinson-White syndrome]] on ECG.""",
    # 16: a referral letter
    """Dear Dr. {NAME:Okonkwo},
I am referring Mrs. {NAME:Hernandez}'s daughter, {NAME:Sofia Hernandez} (DOB {DATE:9/22/2008}), for [[asthma]].
She attends school in {GEO:Evanston}. Her father, {NAME:Miguel}, can be reached at {PHONE:847.555.0162}.
Please send the consult note to {EMAIL:referrals@lakeside-peds.example.com}.
Sincerely, {NAME:Anna Kowalczyk}, MD""",
    # 17: a nursing note with names propagated
    """0800: Pt {NAME:Harrison Cole} resting. [[Pain score]] 3/10. [[Foley catheter]] in place.
1200: {NAME:Harrison} ambulated with PT. Wife {NAME:Deborah} at bedside. [[Incentive spirometry]] encouraged.
1600: {NAME:Cole} reports [[nausea]]; [[ondansetron]] 4 mg given. Bed request {OTHER_ID:BR-558812}.
Next dose due {DATE:11/24/2026}. [[Deep vein thrombosis]] prophylaxis with [[enoxaparin]].""",
    # 18: an uppercase form and assorted formats
    """NAME: {NAME:WASHINGTON}, {NAME:DENISE}   SSN: {SSN:078 05 1120}   ACCT: {ACCOUNT:88120045}
DOS: {DATE:11/03/2023}   RM: 3   ATTENDING: {NAME:R. Patel}, MD
Seen {DATE:Nov 3}. Return {DATE:December 2023}. Call {PHONE:1-800-555-0199}.
Hospital case number {OTHER_ID:HC-2023-55812}. [[Urinary tract infection]]; [[pyelonephritis]] excluded.""",
    # 20-25: written after the scrubber reached 100% on 1-19 and scored before any change for them
    """ED triage {DATE:10/31/2025}: {NAME:Margaret O'Neil}, {AGE:ninety-four} y/o female, brought by EMS from
{GEO:Sunrise Court} nursing home in {GEO:Macon County}. Daughter {NAME:Theresa} ({PHONE:404-555-0172}) at bedside.
[[Hip fracture]] after a fall; [[osteoporosis]]. Prior [[Paget disease]] of bone. Insurance member #{HEALTH_PLAN:HUM-88120044}.
Ambulance unit plate {VEHICLE:GA 4471KT}.""",
    """Consult requested by Dr. {NAME:Yusuf Haddad}. Pt {NAME:Ingrid Solberg} ({NAME:Solberg, Ingrid}), MRN {MRN:7741093}.
Seen Tuesday, {DATE:14 November 2023}. [[Sjogren syndrome]] with [[dry eyes]]; [[Raynaud phenomenon]].
Contact via {EMAIL:ingrid.solberg@mail.example.net} or {URL:https://www.example.net/~isolberg}.
Lab accession {OTHER_ID:H23-118204} for [[anti-Ro antibodies]].""",
    """[doctor] good morning , mrs. {NAME:garcia} . how is {NAME:carlos} doing ?
[patient] he's fine , thank you , doctor . we moved to {GEO:tucson} in {DATE:august 2024} .
[doctor] is your number still {PHONE:520-555-0143} ? and the email {EMAIL:lgarcia@example.com} ?
[patient] yes . my birthday is {DATE:july 9} , if you need it .""",
    """Device interrogation: ICD Medtronic SN: {DEVICE:PZC301245H}, leads model {DEVICE:5076-52} lot {DEVICE:2231-A7}.
Remote monitoring from IP {IP:198.51.100.23} on {DATE:2024.01.15}. Home monitor serial no. {DEVICE:RM-22-0045781}.
[[Ventricular tachycardia]] x2, [[appropriate shocks]]. [[Brugada syndrome]] considered.
Vehicle: patient drives a truck, VIN {VEHICLE:3FTTW8F97PRA12345}; DMV notified per law.""",
    """OPERATIVE NOTE  Surgeon: {NAME:Kenji Watanabe}, MD  Assistant: {NAME:Olivia Brandt}, PA-C
Date: {DATE:2/6/2025}  Case ID: {OTHER_ID:OR-2025-00831}
Procedure: [[laparoscopic cholecystectomy]] for [[gallstone pancreatitis]]. [[Calot's triangle]] identified.
Specimen to pathology (accession {OTHER_ID:S25-01177}). Patient's Medicaid number {HEALTH_PLAN:QX77120498} on file.
Photo of specimen saved as {PHOTO:gb_specimen_0206.heic}.""",
    """Letter of medical necessity for {NAME:Abdullah Rahimi}, SSN {SSN:219-09-9999}, account {ACCOUNT:ACT99081234}.
{NAME:Rahimi} is a {AGE:93}-year-old veteran residing in {GEO:Fayetteville}, {GEO:NC 28301}, with
[[amyotrophic lateral sclerosis]] ([[Lou Gehrig disease]]). Fingerprint ID {BIOMETRIC:FPR-0092-7731} used for the
VA portal; license {LICENSE:N12-448-901} (certified nursing assistant, {NAME:Hana Rahimi}).""",
    # 26-28: a second held-out batch, scored before any change for them
    """Transfer note. {NAME:Fatima Zahra Benali}, {AGE:91}-year-old, from {GEO:St. Luke's Manor} at
{GEO:72 Birchwood Lane}, {GEO:Albany, NY 12208}. Nephew {NAME:Omar} (cell {PHONE:518-555-0177}) is her proxy.
Known [[chronic kidney disease]] stage 4 and [[anemia of chronic disease]]. Last dialysis {DATE:Sept. 30}.
Medicare beneficiary number {HEALTH_PLAN:7AQ9-MM2-XK41}; chart number {MRN:CH-0091847}.""",
    """Addendum {DATE:1 Feb 2025} by {NAME:Nkechi Eze}, NP: spoke with the patient's employer, Mr. {NAME:Dale Hutchins}.
Work email {EMAIL:dhutchins@acme-logistics.example}. Patient's badge number {OTHER_ID:ACM-220931}.
[[Carpal tunnel syndrome]] bilateral; [[Phalen test]] positive, [[Tinel sign]] positive.
Photos of the hands uploaded: {PHOTO:hands_bilat_20250201.jpeg}. Telemedicine link {URL:https://meet.example.com/j/88120045}.""",
    """[patient_guest] i'm his daughter , {NAME:rosa} . we live in {GEO:el paso} now .
[doctor] and your dad is how old now ?
[patient_guest] he turned {AGE:ninety-five} on {DATE:june 2nd} .
[doctor] okay . so mr. {NAME:delgado} , any [[shortness of breath]] ? i see the [[pacemaker]] , serial {DEVICE:KDR-4471-99} .""",
    # 19: a mixed note with website, health plan, device, age words
    """{NAME:Walter Kim} is a {AGE:ninety} year old man, here with his granddaughter {NAME:Chloe}.
Group number {HEALTH_PLAN:GRP-004471}, subscriber ID {HEALTH_PLAN:WK88120993}.
Hearing aid serial {DEVICE:HA-2291-4478}. Patient education at {URL:http://example.org/heart-failure}.
[[Congestive heart failure]], [[ejection fraction]] 35%. [[Aortic stenosis]]; [[Glasgow Coma Scale]] 15.""",
]

#: Clinical phrases that must survive the scrubber verbatim wherever they stand (eponyms, colour and
#: surname-like words, family-history and chief-complaint contexts).
CLINICAL_PHRASES = [
    "kidney stone", "brown urine", "white blood cell", "red blood cell", "chest pain", "breast cancer",
    "diabetes mellitus", "type 2 diabetes mellitus", "Parkinson disease", "Parkinson's disease", "Graves disease",
    "Down syndrome", "Hodgkin lymphoma", "non-Hodgkin lymphoma", "Alzheimer disease", "Crohn's disease",
    "Cushing syndrome", "Addison disease", "Hashimoto thyroiditis", "Bell palsy", "Tourette syndrome",
    "Huntington disease", "Raynaud phenomenon", "Kaposi sarcoma", "Barrett esophagus", "Marfan syndrome",
    "Guillain-Barre syndrome", "Wolff-Parkinson-White syndrome", "Stevens-Johnson syndrome", "Epstein-Barr virus",
    "Turner syndrome", "Wilson disease", "Paget disease", "Kawasaki disease", "Sjogren syndrome", "Meniere disease",
    "Ewing sarcoma", "Wilms tumor", "Burkitt lymphoma", "Tanner stage", "Gleason score", "Wells score",
    "Glasgow Coma Scale", "Apgar score", "Foley catheter", "Valsalva maneuver", "Trendelenburg position",
    "Babinski sign", "Murphy sign", "Homans sign", "Romberg test", "Bishop score", "Child-Pugh class",
    "Mallory-Weiss tear", "Whipple procedure", "Nissen fundoplication", "Colles fracture", "Jones fracture",
    "Smith fracture", "Gram stain", "Pap smear", "Frank-Starling law", "frank hematuria", "grace period",
    "shortness of breath", "atrial fibrillation", "congestive heart failure", "coronary artery disease",
    "chronic obstructive pulmonary disease", "community-acquired pneumonia", "urinary tract infection",
    "deep vein thrombosis", "pulmonary embolism", "gross hematuria", "brown sputum", "black stools",
    "white matter lesions", "green stool", "gray matter", "yellow sclera", "stone analysis", "gallstone pancreatitis",
    "sick sinus syndrome", "complete heart block", "invasive ductal carcinoma", "estrogen receptor positive",
    "sentinel lymph node", "diabetic foot ulcer", "diabetic retinopathy", "cervical strain", "rib fracture",
    "pneumothorax", "hypertension", "lisinopril 10 mg", "metformin 1000 mg twice daily", "ceftriaxone",
    "azithromycin", "sepsis", "asthma", "pain score", "incentive spirometry", "ondansetron", "enoxaparin",
    "ejection fraction", "aortic stenosis", "troponin", "aspirin", "syncope", "nausea", "pyelonephritis",
    "HbA1c 8.9%", "BP 142/88", "WBC 11.2", "SpO2 94% on room air", "COVID-19", "HER2 positive", "BRCA1 mutation",
    "vitamin B12 deficiency", "CD4 count 350", "L4-L5 disc herniation", "ICD-10", "May-Thurner syndrome",
    "Christmas disease", "Lou Gehrig disease", "Hand-foot-and-mouth disease", "Lyme disease", "Reye syndrome",
    "will return in 2 weeks", "may be discharged in May", "bill of health", "hope for recovery",
    "mark on the skin", "rose from 8 to 12", "frank pus",
]  # fmt: skip

#: Sentences that put each clinical phrase after the cues that used to erase it.
CARRIERS = [
    "CC: {p}.",
    "Mother: {p}. Father: {p}.",
    "Mr. Stone, Mrs. Brown and Dr. White discussed {p} with the patient.",
    "Patient reports {p}. Plan: review {p} tomorrow.",
    "Smith, John: {p}",
]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class Note:
    text: str
    identifiers: tuple[Span, ...]
    clinical: tuple[tuple[int, int], ...]


_MARK = re.compile(r"\{([A-Z_]+):([^{}]*)\}|\[\[([^\[\]]*)\]\]")


def parse(marked: str) -> Note:
    """Strip the marks from one note; return its text and the exact spans of what they marked."""
    out: list[str] = []
    pos = 0
    length = 0
    ids: list[Span] = []
    clinical: list[tuple[int, int]] = []
    for m in _MARK.finditer(marked):
        out.append(marked[pos : m.start()])
        length += m.start() - pos
        if m.group(1):
            kind, value = m.group(1), m.group(2)
            assert kind in KINDS, kind
            ids.append(Span(length, length + len(value), kind))
        else:
            value = m.group(3)
            clinical.append((length, length + len(value)))
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(marked[pos:])
    return Note("".join(out), tuple(ids), tuple(clinical))


def corpus() -> list[Note]:
    return [parse(n) for n in NOTES]


def carrier_texts() -> list[tuple[str, str]]:
    """(phrase, text) for every clinical phrase in every carrier sentence."""
    return [(p, c.format(p=p)) for p in CLINICAL_PHRASES for c in CARRIERS]


@dataclass
class Figures:
    found: dict[str, int]
    planted: dict[str, int]
    missed: list[tuple[str, str]]  # (kind, identifier): synthetic values, printed only by tests and the bench
    clinical_altered: list[str]

    @property
    def recall(self) -> float:
        return sum(self.found.values()) / sum(self.planted.values())

    def per_kind(self) -> str:
        return ", ".join(f"{k} {self.found.get(k, 0)}/{n}" for k, n in sorted(self.planted.items()))


def _covered(text: str, start: int, end: int, spans) -> bool:
    """Every character of text[start:end] but white space and commas lies in some replaced span."""
    return all(any(s <= i < e for s, e, _ in spans) for i in range(start, end) if text[i] not in " ,\n")


def evaluate(scrub) -> Figures:
    """Run ``scrub`` (evaluator.deid.scrub) over the corpus and the carrier sentences."""
    found: dict[str, int] = {}
    planted: dict[str, int] = {}
    missed: list[tuple[str, str]] = []
    altered: list[str] = []
    for note in corpus():
        result = scrub(note.text)
        for span in note.identifiers:
            planted[span.kind] = planted.get(span.kind, 0) + 1
            if _covered(note.text, span.start, span.end, result.spans):
                found[span.kind] = found.get(span.kind, 0) + 1
            else:
                missed.append((span.kind, note.text[span.start : span.end]))
        for start, end in note.clinical:
            if any(s < end and start < e for s, e, _ in result.spans):
                altered.append(note.text[start:end])
    for phrase, text in carrier_texts():
        if phrase not in scrub(text).text or scrub(text).text.count(phrase) != text.count(phrase):
            altered.append(f"{phrase!r} in {text!r}")
    return Figures(found, planted, missed, altered)
