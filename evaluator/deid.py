"""De-identification of clinical text before it leaves the machine (an external LLM judge, Weave).

What is removed: the HIPAA Safe Harbor identifiers that occur in free text: names; geographic units smaller
than a state (street addresses, city after a cue, county, ZIP); every date element but the year; ages over 89,
in digits or in words (replaced by "90+"); phone and fax numbers; e-mail addresses; URLs; IP addresses
(v4 and v6); SSNs; medical record, health plan, account, certificate/licence, vehicle (plates, VINs), device
(serials, UDIs), biometric and accession numbers and any other number introduced by an identifier cue; photo
file references. Kept on purpose: years alone, a month name alone ("in May"), ages up to 89, doses, vitals
("120/80"), lab values, clinical terms.

Why no library does the detection: the maintained ones need a model hub here. Presidio's ``AnalyzerEngine``
loads a spaCy model (not on PyPI) at construction and fails offline; scrubadub finds names only through
spaCy/TextBlob/Stanford add-ons whose models are downloaded; philter-lite needs NLTK data downloaded at run
time. Presidio's pattern recognizers alone are regexes like the ones below, behind a 126 MB spaCy install. What
this module takes from a library is the data it cannot make up: given names and surnames come from Faker's
person providers (MIT licence, shipped in the wheel, no download).

How names are found, strongest first:
- cues: a title ("Dr.", "mrs."), a label ("Patient:", "Signed by:"), a credential ("..., MD"), "my name is",
  a greeting in a dialogue ("hi , brian"), a relative's label or phrase ("Mother: Linda", "her son Kevin"),
  and the "Smith, John" shape (a capitalised word, a comma, a known given name);
- the name lists: a known given name followed by a capitalised word ("Brian Okafor"), or a given name or
  surname alone ("Alvarez has chest pain", "seen with kevin nguyen") when it is in the US/UK lists and is not
  also an English or clinical word;
- every word of a name found either way is then removed everywhere else in the note.
Name words that are also English words (Stone, Brown, White, Grace, Will: :data:`_ENGLISH_WORD_NAMES`) count
only next to a cue or a given name, and elsewhere only where capitalised mid-sentence. "CC:" (chief complaint)
is no cue; a relative's label ("Mother:") takes only a known name, never "breast cancer"; eponyms ("Graves
disease", "Tanner stage", "Parkinson's") are never names without a title.

Every pattern runs in linear time: repetitions are bounded ({1,40}) or possessive (``++``, ``*+``), an
unbounded repetition is never nested in another over characters both could match, and patterns that could
start anywhere in a long run are anchored by a look-behind, so a run is tried once, not at each character.
The tests scrub 32 kB of adversarial input of each shape and check that doubling it roughly doubles the time.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field

# --------------------------------------------------------------------------------------------------- data


def _words(text: str) -> list[str]:
    """The white-space separated words of a word list written as one string."""
    return text.split()


#: Faker locales whose given names and surnames are used (Latin-alphabet ones common in US/UK hospitals).
#: A word alone (no cue, no second name word beside it) counts only if it is in the core locales' lists:
#: the wider lists hold words that are also anatomy or abbreviations in English notes ("pons", "lata",
#: "Gerd", "Sinus").
_NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_IN", "es_MX", "es_ES", "fr_FR", "de_DE", "it_IT", "pt_BR")
_CORE_LOCALES = ("en_US", "en_GB")

#: Names in those lists that are also lower-case English words (Debian's wamerican list at the time of
#: writing, intersected with Faker 40's lists): alone they are words ("kidney stone", "brown urine", "will"),
#: so they are names only next to a cue or another name word.
_ENGLISH_WORD_NAMES_ALL = frozenset(
    _words(
        """abate agate albino ale aline amber amble amir angel ani ante archer arenas aria arias arroyo auger
        august aura autumn bail baker bale ball banks baptist barber barker barman baron barrio barrios bass
        bassi basso bates bath bean beard beck beer bell bender berg berry best bigot bill billy birch bird
        bishop black blanch blot bob bobby bodkin boles bond boner bones bonnet bonnie booth bourgeois
        bowers bowler bowman brad branch brandy bravo bray brewer brick bridge bridges bright brogan brooks
        brown browning brunet buck bull bullock burns burrows bush butcher butler butte cairn cairns cal
        camps canals canning cannon canny carmine carol carpenter carry carton case cases chad chamberlain
        chambers chandler char chase cherry chi church clay clear cocci colas colleen collier colon comas
        combs comer company contractor convey cook cooper coral cord corona corral cotter cousin cousins cox
        crane craven creed cross cruise crystal curry curt daisy dale dash date davenport dawn day deacon
        dean deep derrick destiny diamond dickey dickie dieter din dirk divan diver divine doctor doe don
        downing downs drake drew drub drum duff duke dunning dyer earl early ebony edit else emo ester eta
        eve fair faith fall fanning fanny farina farmer fee ferry field fielding fields finch fisher flood
        flora flowers font ford forum foster fox frank freely freeman french fresh frost fry fuller gala
        gamble garland garner garrison gates gay gene gentry gibbon gibbons gill glass glazier glen golden
        good grace grant graves gray green grey griffin grimes grit gross gunning guy hale hall hardy hare
        harm harry harsh hart hasty hawthorn hays hazel hearty heath heather hector heron herring hickey
        hicks hill ho hogan holder holly hood hope horn house huff hull hunt hunter iris ivory jack jade
        jasmine jay jimmy john johns josh joy judge junk kale key khan kidney killer king knight lacy lad
        lam lamas lamb lance lane law lawless lea leach lee leech lees levy lira little llamas llano llanos
        long looney lope lopes lord lore love loyal lucid lucky lynch mace madden madrigal mall mallet mane
        manning mans mar mares margarita maria marina marine mark marks marry marsh marten martin martins
        mas mason master mate max maxim may mayo mayoral meadows meg melody merchant merino merry mesa meta
        mike miles miller millet mills misty moan moles moll monk monks moody moon more morrow moss mountain
        nacho nary newton nick noble noel north oak pace page pages pal palazzo pall palomino pant parent
        park parks parry parsons pastor patty peacock peck peer penny peter peters petty phoebe pi pier
        pierce pinto plaza plover pol polo pope porter potter pottier power powers price prince proctor
        quill rafter rails raja ram randy rattan ravel raven ray read real reed reeves rice rich rick riddle
        ridge ring rivers roach robin rock roe roger rogers roman rose rosemary rout ruby ruddy rush rust
        sager sales sally salmon salvo sandal sanders sandy sane sans savage savannah savant sawyer scullion
        sears sellers serge sexton shah sharp shepherd sherry shields shine short sierra silk sims singleton
        small smart smith snow sol sole soprano sparks spears stack stark steed stein steward stokes stone
        storey story stout strong sue summer summers sunder supple swift swords tailor tank tanner terry
        till toms tom toner tony torrent torrents tron troy tucker turner urban valentine veer vi victor
        victory vigil villa viola wade walker wall walls ward ware warmer warren warrior waters watts weaver
        weeks weir welch wells west wheeler white winter winters wise wolf wolfram wood woods wren wright
        yogi young"""
    )
)
#: Of those, the ones far more often a name than the word (john, maria, harry): treated as plain names.
_MOSTLY_NAMES = frozenset(
    _words(
        """amir bobby billy brad carol chad colleen derrick dieter dirk earl hector harry jimmy john josh maria
        martin meg mike noel patty peter rick roger sally sherry smith terry tom tony troy victor warren"""
    )
)
_ENGLISH_WORD_NAMES = _ENGLISH_WORD_NAMES_ALL - _MOSTLY_NAMES

#: Clinical and note vocabulary that is never a name found without a cue, whatever the name lists say.
_CLINICAL_WORDS = frozenset(
    _words(
        """abdomen acute allergies allergy anemia angina ankle anterior aorta arm artery assessment asthma atrial
        back bilateral biopsy bladder blood body bone bowel brain breast cancer cardiac care cell cells
        chest chief chronic clinic colon complaint cough cyst diabetes diagnosis disease disorder dose ear
        edema emergency exam eye failure family father fever foot fracture gland grade graves head heart
        hepatitis hernia history hospital insulin kidney knee labs left lesion liver lobe lung lymph
        lymphoma medical medication medications mellitus mother murmur muscle nerve node normal note nurse
        pain palsy patient pelvis physical plan positive posterior pressure problem pulmonary rash renal
        right scan score sign skin spine stage stone stool stroke surgery syndrome test therapy throat
        thyroid tissue tumor type ulcer urine valve vein white yellow brown black green red blue gray grey
        stones review system systems social surgical present illness impression disposition discharge
        admission follow sinus pons lata peri gerd copd chf cad mri ekg ecg uti allegra nodal"""
    )
)

#: A capitalised word followed by one of these is an eponym ("Graves disease", "Wells score", "Tanner
#: stage 3"), not a person, unless a title says otherwise.
_EPONYM_HEADS = (
    r"disease|diseases|syndrome|syndromes|sign|signs|test|tests|score|scores|criteria|criterion|stage|stages|"
    r"grade|classification|scale|fracture|maneuver|manoeuvre|reflex|palsy|lymphoma|sarcoma|tumou?r|carcinoma|"
    r"triad|lamp|stain|position|procedure|operation|catheter|cyst|node|nodes|esophagus|oesophagus|ulcer|"
    r"murmur|phenomenon|law|index|equation|formula|ligament|duct|canal|body|bodies|cell|cells|solution|"
    r"method|technique|virus|ring|line|tube|block|repair|anomaly|malformation|disorder|thyroiditis|"
    r"encephalopathy|aneurysm|contracture|deformity|node|space|point|incision|shunt|pouch|diverticulum|"
    r"hernia|ileus|angina|neuroma|neuralgia|arteritis|fasciitis|dystrophy|ataxia|chorea|dementia|mask|"
    r"ratio|rule|rules|protocol|class|type|sarcoidosis|lymphadenopathy|granulomatosis|ink|questionnaire|"
    r"inventory|hospital|university|college|school|center|centre|clinic|institute|foundation|medical|"
    r"fascia|triangle|fossa|membrane|gland|clamps?|forceps|retractors?|scissors|needle|elevator|pins?|"
    r"drains?|dressing|sutures?|stitch|gauze|hooks?|speculum|blade|stents?|mesh|splint|frame|tongs|dilators?|"
    r"curette|rongeur|plates?|microplates?|screws?|nail|valve|pump|shunt|graft|flap|pouch|loop|"
    r"fixation|bunionectomy|osteotomy|ectomy|plasty|otomy"
)

#: Eponyms and clinical words protected wherever they stand (they also appear without a head word).
_EPONYMS = frozenset(
    _words(
        """parkinson parkinson's parkinsonism parkinsonian alzheimer alzheimer's hodgkin hodgkin's non-hodgkin
        crohn crohn's graves graves' addison addison's cushing cushing's cushingoid hashimoto hashimoto's
        down down's foley epley valsalva trendelenburg heimlich apgar glasgow gram pap papanicolaou kussmaul
        cheyne-stokes wolff-parkinson-white guillain-barre guillain-barré stevens-johnson epstein-barr
        tourette tourette's huntington huntington's raynaud raynaud's kaposi kaposi's barrett barrett's
        marfan wilms ewing burkitt meniere meniere's sjogren sjogren's sjögren babinski murphy's tinel
        phalen lachman mcmurray romberg chvostek trousseau rovsing mcburney korsakoff wernicke broca horner
        virchow whipple nissen roux-en-y billroth mallory-weiss zenker meckel osler paget peyronie reye tay-
        sachs kawasaki klinefelter turner's hirschsprung charcot dupuytren colles tanner gleason breslow
        child-pugh swan-ganz frank-starling bence-jones ziehl-neelsen giemsa mantoux coombs schilling epley
        dix-hallpike"""
    )
)

_NOT_NAMES = frozenset(
    _words(
        """there doctor doc everyone everybody all guys folks sir madam maam ma'am dear nurse again so much very
        for you yes no okay ok the a an and or but it this that then now well how good great nice thanks
        thank patient patients pt name unknown none not today tomorrow yesterday morning afternoon evening
        night he she they we i me my his her their our your who what when where which whom is was are were
        be been male female man woman boy girl mother father son daughter wife husband md rn do np dr mr mrs
        ms hospital clinic history physical exam examination assessment plan diagnosis medications allergies
        mrn dob ssn id phone fax email address in on at of to with by from as if has had have will would can
        could should may might must did does done denies reports states says said presents presented here
        team staff everyone's sure fine doing feeling going also too both back tonight dragon dax siri alexa
        visual"""
    )
)

#: Month names in any case, but "May" only capitalised ("you may 2x" is not a date).
#: Words after "lives in" / "moved to" that are no place.
_NOT_PLACES = frozenset(
    _words(
        """the a an his her their our my fear poverty pain town city country state house home apartment shelter
        care facility here there with alone together assisted living nursing group foster hospital rehab
        remission denial bed recovery hospice jail prison isolation"""
    )
)

#: US state and territory postal codes.
_STATE = (
    r"(?:A[KLRSZ]|C[AOT]|D[CE]|FL|G[AU]|HI|I[ADLN]|K[SY]|LA|M[ADEINOST]|N[CDEHJMVY]|O[HKR]|P[AR]|RI|S[CD]|T[NX]|"
    r"UT|V[AIT]|W[AIVY])"
)

_MONTH = (
    r"(?:(?i:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)|May|MAY)"
)
_UNITS = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_TEENS = r"(?:ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)"
_TENS = r"(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)"
#: An age over 89 in words: "ninety", "ninety-two", "one hundred (and) three", "a hundred and twelve".
_AGE_WORDS = (
    rf"(?:ninety(?:[\s-]{_UNITS})?|(?:one|a)\s+hundred(?:\s+(?:and\s+)?(?:{_TENS}(?:[\s-]{_UNITS})?|{_TEENS}|"
    rf"{_UNITS}))?)"
)
_AGE_CONTEXT = r"(?:[\s-]?(?:years?|yrs?|y/?o\b|yo\b)(?:[\s-]?old|\s+of\s+age)?)"

#: Identifier cues: a word that says the token after it is an identifier, whatever its shape.
_ID_CUES = (
    r"MRN|medical\s+record(?:\s+(?:number|no\.?|num))?|record\s+(?:number|no\.?)|chart(?:\s+(?:number|no\.?))?|"
    r"acct\.?|account(?:\s+(?:number|no\.?|num))?|billing\s+(?:id|number)|invoice(?:\s+(?:number|no\.?))?|"
    r"patient\s+id|member(?:\s+(?:id|number|no\.?))?|subscriber(?:\s+(?:id|number))?|"
    r"beneficiary(?:\s+(?:id|number))?|insurance(?:\s+(?:id|number))?|policy(?:\s+(?:number|no\.?|id))?|"
    r"group(?:\s+(?:number|no\.?))|plan\s+(?:id|number)|medicaid(?:\s+(?:id|number))?|"
    r"medicare(?:\s+(?:id|number))?|MBI|HICN|claim(?:\s+(?:number|no\.?))?|"
    r"licen[cs]e(?:\s+(?:number|no\.?|plate))?|DEA(?:\s+(?:number|no\.?))?|NPI|UPIN|"
    r"certificate(?:\s+(?:number|no\.?))?|cert\.?|badge|passport(?:\s+(?:number|no\.?))?|"
    r"plate(?:\s+(?:number|no\.?))?|tag|VIN|vehicle\s+identification\s+number|"
    r"serial(?:\s+(?:number|no\.?))?|S/N|SN|device(?:\s+(?:id|number|serial))?|UDI|lot(?:\s+(?:number|no\.?))?|"
    r"implant(?:\s+(?:id|number))?|model(?:\s+(?:number|no\.?))?|"
    r"accession(?:\s+(?:number|no\.?))?|specimen(?:\s+(?:id|number|no\.?))?|case\s+(?:number|no\.?)|"
    r"order(?:\s+(?:number|no\.?|id))|requisition(?:\s+(?:number|no\.?))?|encounter(?:\s+(?:id|number))?|"
    r"visit(?:\s+(?:id|number))|SSN|social\s+security(?:\s+(?:number|no\.?))?|"
    r"fingerprint(?:\s+(?:id|template|scan|record))?|biometric(?:\s+(?:id|template))?|"
    r"retinal\s+scan(?:\s+(?:id|template))?|iris\s+scan(?:\s+(?:id|template))?|"
    r"voice\s*print(?:\s+(?:id|template))?|palm\s*print(?:\s+(?:id|template))?|template|"
    r"photo(?:graph)?(?:\s+(?:id|file|ref(?:erence)?|no\.?|number))?|image(?:\s+(?:id|file))|"
    r"study(?:\s+(?:id|number))?|ticket|reference(?:\s+(?:number|no\.?))?|ref\.?|confirmation(?:\s+number)?"
)

#: (label, pattern); all patterns are matched on the original text and their spans merged.
_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("EMAIL", re.compile(r"(?<![\w.+\-])[\w.+\-]++@[\w\-]++(?:\.[\w\-]++)++")),
    ("URL", re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"']++")),
    (
        "URL",
        re.compile(
            r"(?i)(?<![\w.@\-])(?:[a-z0-9\-]++\.)++(?:com|org|net|edu|gov|io|health|care|info|us|uk)\b"
            r"(?:/[^\s<>\"']*+)?"
        ),
    ),
    ("IP", re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")),
    ("IP", re.compile(r"(?i)(?<![\w:])(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}(?![\w:])")),
    (
        "IP",
        re.compile(
            r"(?i)(?<![\w:])(?:[0-9a-f]{1,4}:){1,6}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,5})?(?![\w:])"
        ),
    ),
    ("SSN", re.compile(r"(?<![\w\-])\d{3}[\- ]\d{2}[\- ]\d{4}(?![\w\-])")),
    (
        "PHONE",
        re.compile(
            r"(?<![\w/+])(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}(?![\w/])"
            r"(?:\s{0,3}(?:x|ext\.?|extension)\s{0,3}\d{1,6})?",
            re.IGNORECASE,
        ),
    ),
    ("PHONE", re.compile(r"(?<![\w+])\+\d{1,3}(?:[\s.\-]\(?\d{1,5}\)?){2,5}(?![\w])")),
    # dates: ISO, numeric with a year, day-month-year with a month name, month-day(-year), month-year
    ("DATE", re.compile(r"(?<![\w/.\-])\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}(?![\w/.\-]*\d)")),
    ("DATE", re.compile(r"(?<![\w/.\-])\d{1,2}[/\-.]\d{1,2}[/\-.](?:\d{4}|\d{2})(?![\w/.\-]*\d)")),
    (
        "DATE",
        re.compile(
            rf"(?i)(?<![\w])\d{{1,2}}(?:st|nd|rd|th)?(?:[\s\-/]|\s+of\s+){_MONTH}\.?(?:[\s\-/,]{{1,2}}(?:\d{{4}}|\d{{2}}))?\b"
        ),
    ),
    (
        "DATE",
        re.compile(rf"(?<![\w]){_MONTH}\.?\s{{1,3}}\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s{{1,3}}\d{{4}})?(?![\w])"),
    ),
    ("DATE", re.compile(rf"(?<![\w]){_MONTH}\.?,?\s{{1,3}}\d{{4}}\b")),
    (
        "DATE",
        re.compile(
            r"(?i)\b(?:on|since|from|until|till|dated|DOS|DOB|seen|admitted|discharged|born|visit|"
            r"returned|onset)\s{1,3}:?\s{0,3}(\d{1,2}/\d{1,2})(?![\w/.\-]*\d)"
        ),
    ),
    # ages over 89: "94-year-old", "aged 92", "age: 101", "ninety-two years old"
    ("AGE", re.compile(rf"(?i)(?<![\w.])(?:9\d|1[0-4]\d)(?={_AGE_CONTEXT})")),
    ("AGE", re.compile(r"(?i)\b(?:aged?|age:)\s{0,3}(9\d|1[0-4]\d)(?!\w|\.\d)")),
    ("AGE", re.compile(rf"(?i)\b{_AGE_WORDS}(?={_AGE_CONTEXT})")),
    ("AGE", re.compile(rf"(?i)\b(?:aged?|turned|turns|turning)\s{{1,3}}({_AGE_WORDS})\b")),
    (
        "AGE",
        re.compile(r"(?i)\b(?:turned|turns|turning)\s{1,3}(9\d|1[0-4]\d)(?![\w.]|\.\d|\s{0,3}(?:deg|°|%))"),
    ),
    # identifiers by cue: the value is one token holding a digit, or two tokens for plates ("7ABC 123")
    (
        "ID",
        re.compile(
            rf"\b(?:(?i:{_ID_CUES})|ID|Id)(?![\w])(?:\s{{0,3}}(?:[:#=]|is|was|number|no\.?|reads|of|on\s+file)){{0,3}}"
            r"\s{0,3}((?:[A-Z]{2} (?=[A-Z0-9]{0,7}\d))?(?=[A-Za-z0-9\-/.()]{0,40}\d)(?:\(\d{2,4}\))?[A-Za-z0-9][A-Za-z0-9\-/().]{1,40}[A-Za-z0-9)]"
            r"(?:[ \-](?=[A-Z]{0,7}\d)[A-Z0-9]{2,8}(?!\w))?)"
        ),
    ),
    # VIN: 17 characters, no I/O/Q, letters and digits mixed
    (
        "ID",
        re.compile(
            r"(?<![\w])(?=[A-HJ-NPR-Z0-9]{0,16}\d)(?=[0-9]{0,16}[A-HJ-NPR-Z])[A-HJ-NPR-Z0-9]{17}(?![\w])"
        ),
    ),
    # GS1 UDI: (01)GTIN then (AI)value groups
    ("ID", re.compile(r"\(01\)\d{14}(?:\(\d{2,4}\)[A-Za-z0-9]{1,20})*+")),
    # prefix-number identifiers (MRN-00482913, AC-77120, S23-04512, XJH123456789)
    ("ID", re.compile(r"(?<![\w\-])[A-Z]{1,4}\d{0,3}-?\d{5,}(?:-\d{1,8})?(?![\w\-])")),
    ("ID", re.compile(r"(?<![\w\-])[A-Z]{1,4}\d{0,3}-\d{2,4}-\d{3,8}(?![\w\-])")),
    # a long run of digits (not a decimal or a grouped count like 250,000)
    ("ID", re.compile(r"(?<![\w.,\-])\d{6,}(?![\w.,\-]*\d)")),
    # dash-grouped numbers (0012-3345-66); two groups only when one has 5+ digits, so "400-600" is a range
    ("ID", re.compile(r"(?<![\w\-])\d{2,6}-\d{2,8}-\d{2,8}(?:-\d{2,8})?(?![\w\-])")),
    ("ID", re.compile(r"(?<![\w\-])(?:\d{3,6}-\d{5,8}|\d{5,6}-\d{3,8})(?![\w\-])")),
    # photo files
    ("ID", re.compile(r"(?i)(?<![\w\-.])[\w\-]{1,80}\.(?:jpe?g|png|gif|bmp|tiff?|heic|dcm|webp)\b")),
    # geography: street address, PO box, "City, ST 12345", county, ZIP after a cue
    (
        "ADDRESS",
        re.compile(
            r"(?<![\w])\d{1,6}\s(?:[NSEW]\.?\s)?(?:[A-Z][A-Za-z]*\.?\s){1,4}"
            r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
            r"Circle|Cir|Highway|Hwy|Parkway|Pkwy|Trail|Trl|Square|Sq|Loop|Row|Pike|Alley|Plaza)\b\.?"
            r"(?:,?\s{0,3}(?:Apt|Apartment|Suite|Ste|Unit|Room|Rm|#)\.?\s{0,3}[\w\-]{1,8})?"
        ),
    ),
    (
        "ADDRESS",
        re.compile(
            r"(?<![\w])[A-Z][a-z]{1,30}(?: [A-Z][a-z]{1,30}){0,2} (?:Street|Avenue|Road|Boulevard|Lane|Drive|"
            r"Court|Terrace|Circle|Parkway|Highway|Trail)\b"
        ),
    ),
    (
        "ADDRESS",
        re.compile(r"(?<![\w])(?:Apt|APT|Apartment|Suite|Ste|Unit)\.?\s{0,3}#?\s{0,3}\d[\w\-]{0,6}\b"),
    ),
    ("ADDRESS", re.compile(r"(?i)\bP\.?\s?O\.?\s{1,3}Box\s{1,3}\d{1,8}\b")),
    # named residences: "St. Luke's Manor", "Maple Grove Village", "Sunset Nursing Home"
    (
        "ADDRESS",
        re.compile(
            r"(?<![\w])(?:St\.?\s|Saint\s)?(?:[A-Z][a-z'’]{1,30}\s){1,3}(?:Manor|Gardens|Village|Estates|"
            r"Commons|Heights|Residence|Retirement\s(?:Home|Community)|Nursing\sHome|Assisted\sLiving|"
            r"Senior\sLiving)\b"
        ),
    ),
    (
        "ADDRESS",
        re.compile(
            rf"(?<![\w])[A-Z][a-zA-Z]{{1,30}}(?:[ \-][A-Z][a-zA-Z]{{1,30}}){{0,2}},\s{{0,3}}{_STATE}\.?"
            r"(?:\s{1,3}\d{5}(?:-\d{4})?)?(?![\w])"
        ),
    ),
    ("ADDRESS", re.compile(rf"(?<![\w]){_STATE}\s{{1,3}}\d{{5}}(?:-\d{{4}})?(?![\w\-])")),
    (
        "ADDRESS",
        re.compile(r"(?<![\w])[A-Z][a-zA-Z]{1,30}(?:\s[A-Z][a-zA-Z]{1,30})?\s(?:County|Parish|Borough)\b"),
    ),
    (
        "ADDRESS",
        re.compile(r"(?i)\b(?:zip|zip\s+code|postal\s+code|postcode)\s{0,3}:?\s{0,3}(\d{5}(?:-\d{4})?)\b"),
    ),
    (
        "ADDRESS",
        re.compile(
            r"(?i:\b(?:lives|living|resides|residing|resident|moved|relocated|born|grew\s+up|hometown|"
            r"school|works?|working|job|church|college|university)\s+(?:alone\s+|here\s+|back\s+)?(?:in|to|from|at|of|is)\s+(?:the\s+)?"
            r"(?:city\s+of\s+|town\s+of\s+|village\s+of\s+)?)"
            r"([A-Z][a-zA-Z]{1,30}(?:[ \-](?:[A-Z][a-zA-Z]{1,30}|de|la|del)){0,3})"
        ),
    ),
    (
        "PLACE_LC",
        re.compile(
            r"\b(?:live|lives|living|resides|residing|moved|relocated|born|grew\s+up)\s+(?:in|to|from)\s+"
            r"([a-z]{2,30}(?: [a-z]{2,30})?)"
            r"(?=\s{0,3}(?:[.,;!?]|$)|\s(?:in|last|since|when|with|now|for|and|near|until|two|three|a)\s)"
        ),
    ),
    (
        "ADDRESS",
        re.compile(
            r"(?i:\b(?:city|town|county|village|neighbou?rhood|district|borough)\s{0,3}:\s{0,3})"
            r"([A-Z][a-zA-Z]{1,30}(?:[ \-][A-Z][a-zA-Z]{1,30}){0,3})"
        ),
    ),
]

#: Tokens for name scanning: letters, with inner apostrophes and hyphens (O'Neil, Smith-Jones).
#: A token glued to a digit ("PaCO2", "HbA1c") is a symbol, not a word, and is not a token at all.
_TOKEN = re.compile(r"(?<![\d_])[^\W\d_]++(?:['’\-][^\W\d_]++)*+(?![\d_])")
#: Titles: abbreviations in any case ("dr. patel" in a lower-case transcript); words only capitalised
#: ("Doctor Okafor", "Sister Mary"), since "the doctor also noticed" has no name after it.
_TITLE = re.compile(
    r"(?<!\d )(?<!\d)\b(?:(?i:mr|mrs|ms|mx|dr|prof)\.?(?!\w)|(?:Miss|Mister|Doctor|Professor|Nurse|Sister|Rev|Judge|Officer)\b)"
)
_LABEL = re.compile(
    r"(?i)\b(?:patient(?:'s)?(?:\s+name)?|name|pt|attending(?:\s+physician)?|physician|provider|surgeon|"
    r"anesthesiologist|resident|intern|fellow|referring(?:\s+(?:physician|provider|md))?|"
    r"primary\s+care(?:\s+(?:physician|provider))?|pcp|signed\s+by|electronically\s+signed\s+by|cosigned\s+by|"
    r"dictated\s+by|transcribed\s+by|seen\s+by|examined\s+by|reviewed\s+by|consultant|rn|np|pa|"
    r"emergency\s+contact|contact|next\s+of\s+kin|nok|guardian|caregiver|poa|health\s+care\s+proxy|proxy|"
    r"interpreter|witness|from|to|attn|author|requested\s+by)\s{0,3}:[ \t]{0,3}"
)
_RELATION = re.compile(
    r"(?i)\b(?:wife|husband|spouse|partner|son|daughter|mother|father|mom|dad|sister|brother|aunt|uncle|"
    r"niece|nephew|grandson|granddaughter|grandmother|grandfather|friend|neighbor|neighbour|fianc[eé]e?|"
    r"boyfriend|girlfriend|roommate|caregiver|child|sibling)\b[ \t]{0,3}[:,]?[ \t]{0,3}"
)
_CREDENTIAL = re.compile(
    r",?\s{1,3}(?:MD|M\.D\.|D\.O\.|RN|NP|PA-C|PhD|DDS|DMD|MBBS|FACP|FACS|APRN|CNM|LPN)\b"
)
_NAMING = frozenset(["my name is", "my name's", "name is", "call me"])
_GREETINGS = frozenset(
    _words(
        """hi hello hey good morning good afternoon good evening thank you thanks bye goodbye nice to meet you"""
    )
)
_SPEECH = re.compile(
    r"(?i)\b(?:my\s+name\s+is|my\s+name's|name\s+is|call\s+me|this\s+is|i\s+am|i'm|hi|hello|hey|"
    r"good\s+(?:morning|afternoon|evening)|thank\s+you|thanks|bye|goodbye|nice\s+to\s+meet\s+you)(?!\w)\s{0,3},?\s{0,3}"
)
_EPONYM_HEAD = re.compile(rf"(?i)\b(?:{_EPONYM_HEADS})\b")
_EPONYM_GAP = re.compile(r"(?:'s|’s|s'|')?[\s\-]{1,3}")
_SENTENCE_END = frozenset('.!?:;\n\r\t•-*#>|[]()"')


@dataclass
class ScrubResult:
    text: str
    #: (category, count) for every category found; the identifiers themselves are never kept.
    counts: dict[str, int] = field(default_factory=dict)
    #: (start, end, category) of every replaced span, as offsets into the input (no identifier text).
    spans: list[tuple[int, int, str]] = field(default_factory=list)


@functools.cache
def _name_lists(locales: tuple[str, ...] = _NAME_LOCALES) -> tuple[frozenset[str], frozenset[str]]:
    """Lower-cased given names and surnames from Faker's person providers (Latin-alphabet entries only)."""
    first: set[str] = set()
    last: set[str] = set()
    for locale in locales:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        for attr, into in (
            ("first_names", first),
            ("first_names_male", first),
            ("first_names_female", first),
            ("last_names", last),
        ):
            for name in getattr(provider, attr, ()) or ():
                if name.isascii() and name.replace("-", "").replace("'", "").isalpha() and len(name) >= 2:
                    into.add(name.lower())
    return frozenset(first), frozenset(last)


# ------------------------------------------------------------------------------------------------- tokens


@dataclass(slots=True)
class _Tok:
    start: int
    end: int
    word: str  # without a possessive 's
    low: str

    @property
    def cap(self) -> bool:
        return self.word[:1].isupper() and not (len(self.word) > 1 and self.word.isupper())

    @property
    def upper(self) -> bool:
        return len(self.word) > 1 and self.word.isupper()


def _tokens(text: str) -> list[_Tok]:
    toks = []
    for m in _TOKEN.finditer(text):
        word = m.group()
        if word.endswith(("'s", "’s")):
            word = word[:-2]
        toks.append(_Tok(m.start(), m.start() + len(word), word, word.lower()))
    return toks


def _gap(text: str, a: _Tok, b: _Tok) -> str:
    return text[a.end : b.start]


def _sentence_start(text: str, tok: _Tok) -> bool:
    """Whether ``tok`` opens a sentence, a line or a field: there a capital letter says nothing."""
    i = tok.start - 1
    while i >= 0 and text[i] == " ":
        i -= 1
    return i < 0 or text[i] in _SENTENCE_END


# -------------------------------------------------------------------------------------------------- names


class _Names:
    """Finds name spans; one instance per text."""

    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.by_start = {t.start: i for i, t in enumerate(self.toks)}
        self.first, self.last = _name_lists()
        self.core_first, self.core_last = _name_lists(_CORE_LOCALES)
        heads = {m.start() for m in _EPONYM_HEAD.finditer(text)}
        #: indexes of tokens followed by an eponym head word ("Graves" in "Graves disease")
        self.before_head = {
            i
            for i, (t, n) in enumerate(zip(self.toks, self.toks[1:]))
            if n.start in heads and _EPONYM_GAP.fullmatch(text, t.end, n.start)
        }
        #: indexes of tokens weak detection must not touch: eponyms, alone or before a head word
        self.protected = self.before_head | {i for i, t in enumerate(self.toks) if t.low in _EPONYMS}
        self.spans: list[tuple[int, int]] = []
        self.words: set[str] = set()

    # -- classification
    def is_protected(self, i: int) -> bool:
        return i in self.protected

    def ambiguous(self, low: str) -> bool:
        return low in _ENGLISH_WORD_NAMES or low in _CLINICAL_WORDS or low in _EPONYMS or low in _NOT_NAMES

    def known(self, low: str) -> bool:
        return low in self.first or low in self.last

    def nameish(self, tok: _Tok) -> bool:
        """A word that can continue a name after a cue: capitalised or a known name, never a function word."""
        if tok.low in _NOT_NAMES or tok.low in _CLINICAL_WORDS or len(tok.word) < 2:
            return False
        return tok.cap or tok.upper or (self.known(tok.low) and not self.ambiguous(tok.low))

    def take(self, i: int, j: int, strong: bool = False) -> None:
        """Tokens i..j-1 are a name. Without a title (``strong``) the run stops before an eponym ("Wilson"
        in "Wilson disease")."""
        if not strong:
            for k in range(i, j):
                if k in self.before_head:
                    j = k
                    break
        if j <= i:
            return
        self.spans.append((self.toks[i].start, self.toks[j - 1].end))
        for t in self.toks[i:j]:
            self.words.add(t.low)

    def _initial_after(self, i: int) -> bool:
        """Token i is a single capital followed by '.' (a middle initial)."""
        t = self.toks[i]
        return len(t.word) == 1 and t.word.isupper() and self.text[t.end : t.end + 1] == "."

    def extend(self, i: int, limit: int = 3, need=None) -> int:
        """From token i, the end of a run of name words on one line (initials included). The first word must
        pass ``need`` (default: :meth:`nameish`); later ones are capitalised words that are no function words."""
        j = i
        while j < len(self.toks) and j - i < limit:
            t = self.toks[j]
            if j > i:
                gap = _gap(self.text, self.toks[j - 1], t)
                if not (gap == " " or (gap == ". " and len(self.toks[j - 1].word) == 1)):
                    break
                if j in self.before_head and not self.known(t.low):
                    break
            if self._initial_after(j):
                j += 1
                continue
            if j == i:
                ok = need(t) if need is not None else self.nameish(t)
            else:
                ok = (t.cap or t.upper) and t.low not in _NOT_NAMES and len(t.word) >= 2
            if not ok:
                break
            j += 1
        return j

    def tok_at(self, pos: int) -> int | None:
        """Index of the first token starting at or after pos (on the same line)."""
        for k in range(pos, min(pos + 4, len(self.text) + 1)):
            if k in self.by_start:
                return self.by_start[k]
        return None

    # -- cues
    def cues(self) -> None:
        text = self.text
        for m in _TITLE.finditer(text):
            i = self.tok_at(m.end())
            if i is None or text[m.end() : self.toks[i].start].strip(" "):
                continue
            t = self.toks[i]
            if t.low in _NOT_NAMES:
                continue
            if not m.group()[0].islower() and not (t.cap or t.upper):
                continue  # "MR angiography", "Dr. dictated": a capitalised title takes a capitalised name
            if m.group()[0].islower() and not (t.cap or t.upper):
                # "dr. patel" in a lower-case note: one word, two when the second is a known surname
                j = i + 1
                if (
                    j < len(self.toks)
                    and _gap(text, t, self.toks[j]) == " "
                    and self.toks[j].low in self.last
                ):
                    j += 1
                self.take(i, j, strong=True)
                continue
            self.take(i, self.extend(i, need=lambda _t: True), strong=True)
        for m in _LABEL.finditer(text):
            i = self.tok_at(m.end())
            if i is None:
                continue
            label_lower = m.group()[0].islower()
            j = self.last_first(i) or self.extend(
                i, need=lambda t, lw=label_lower: self.nameish(t) and (t.cap or t.upper or lw)
            )
            if j > i and not all(self.toks[k].low in _CLINICAL_WORDS for k in range(i, j)):
                self.take(i, j)
        for m in _RELATION.finditer(text):
            i = self.tok_at(m.end())
            if i is None or self.toks[i].start != m.end():
                continue
            t = self.toks[i]
            # a relative's name only when it is one: "Mother: Linda", never "Mother: breast cancer"
            if t.low in _NOT_NAMES or t.low in _CLINICAL_WORDS:
                continue
            if (t.cap or t.upper) and (
                t.low in self.first or (t.low in self.last and not self.ambiguous(t.low))
            ):
                self.take(i, self.extend(i, need=lambda _t: True))
            elif t.word.islower() and t.low in self.first and not self.ambiguous(t.low):
                self.take(i, i + 1)  # "my wife maria says"
        for m in _CREDENTIAL.finditer(text):
            # "Raymond Okafor, MD": up to three capitalised words before the credential, on one line
            k = self.tok_before(m.start())
            if k is None:
                continue
            i = k
            while i > k - 3 and i > 0:
                prev = self.toks[i - 1]
                if _gap(text, prev, self.toks[i]) not in (" ", ". "):
                    break
                if not (self._initial_after(i - 1) or ((prev.cap or prev.upper) and self.nameish(prev))):
                    break
                i -= 1
            last = self.toks[k]
            if (last.cap or last.upper) and last.low not in _NOT_NAMES:
                self.take(i, k + 1)
        for m in _SPEECH.finditer(text):
            i = self.tok_at(m.end())
            if i is None:
                continue
            t = self.toks[i]
            if t.low in _NOT_NAMES or t.low in _CLINICAL_WORDS or len(t.word) < 3:
                continue
            j = i + 1
            if j < len(self.toks) and _gap(text, t, self.toks[j]) == " ":
                n = self.toks[j]
                if (n.low in self.last and not self.ambiguous(n.low)) or (
                    n.cap and t.cap and self.nameish(n)
                ):
                    j += 1
                elif m.group().lower().startswith(("my name", "name is", "call me")) and not (
                    self.ambiguous(n.low)
                ):
                    j += 1  # "my name is brian kowalski"
            phrase = " ".join(m.group().lower().replace(",", " ").split())
            if phrase in _NAMING:
                self.take(i, j)  # "my name is ...": whatever follows is a name
                continue
            # a greeting or "i'm ...": a known given name, or a word that is no English word and ends the clause
            after = text[self.toks[j - 1].end :].lstrip(" ")
            if (t.low in self.first and not self.ambiguous(t.low)) or (
                phrase in _GREETINGS and not self.ambiguous(t.low) and (not after or after[0] in ",.!?;\n")
            ):
                self.take(i, j)
        self.last_first_all()

    def tok_before(self, pos: int) -> int | None:
        """Index of the token that ends at ``pos`` or one character before it."""
        for k in (pos, pos - 1):
            if k in self.by_end:
                return self.by_end[k]
        return None

    @functools.cached_property
    def by_end(self) -> dict[int, int]:
        return {t.end: i for i, t in enumerate(self.toks)}

    def last_first(self, i: int) -> int | None:
        """ "Smith, John (A.)" at token i: a capitalised word, a comma, a known given name. End index or None."""
        if i + 1 >= len(self.toks):
            return None
        a, b = self.toks[i], self.toks[i + 1]
        if _gap(self.text, a, b) not in (", ", ","):
            return None
        if not ((a.cap and b.cap) or (a.upper and b.upper)):
            return None
        if b.low not in self.first or a.low in _CLINICAL_WORDS or a.low in _NOT_NAMES or a.low in _EPONYMS:
            return None
        j = i + 2
        if (
            j < len(self.toks)
            and _gap(self.text, b, self.toks[j]) == " "
            and (self._initial_after(j) or (self.toks[j].cap and self.toks[j].low in self.first))
        ):
            j += 1
        return j

    def last_first_all(self) -> None:
        text = self.text
        for i in range(len(self.toks) - 1):
            if text[self.toks[i].end : self.toks[i].end + 1] != ",":
                continue
            j = self.last_first(i)
            if j:
                a = self.toks[i]
                # the surname must itself look like one: known, or not an English word
                if a.low in self.last or a.low in self.first or not self.ambiguous(a.low):
                    self.take(i, j)

    # -- the name lists, without a cue
    def lists(self) -> None:
        toks = self.toks
        n = len(toks)
        i = 0
        while i < n:
            t = toks[i]
            if self.is_protected(i) or t.low in _CLINICAL_WORDS or t.low in _NOT_NAMES or t.low in _EPONYMS:
                i += 1
                continue
            if self.text[max(0, t.start - 6) : t.start].endswith(("St. ", "Saint ", "San ", "Santa ")):
                i += 1  # "St. George's", "San Diego": a saint's name is a place or an institution
                continue
            nxt = toks[i + 1] if i + 1 < n else None
            joined = nxt is not None and _gap(self.text, t, nxt) == " "
            eponym = i in self.before_head
            if t.cap and t.low in self.first and len(t.word) >= 3 and not eponym:
                # a given name followed by a capitalised word (or an initial): "Brian Okafor", "Grace Brown"
                if (
                    joined
                    and (nxt.cap or self._initial_after(i + 1))
                    and nxt.low not in _NOT_NAMES
                    and i + 1 not in self.before_head
                ):
                    j = self.extend(i)
                    if j > i + 1:
                        self.take(i, j)
                        i = j
                        continue
                if not self.ambiguous(t.low) and len(t.word) >= 4 and t.low in self.core_first:
                    self.take(i, i + 1)
            elif (
                t.cap
                and t.low in self.core_last
                and not self.ambiguous(t.low)
                and len(t.word) >= 4
                and not eponym
            ):
                self.take(i, i + 1)
            elif t.word.islower() and len(t.word) >= 4 and not self.ambiguous(t.low):
                if t.low in self.core_first:
                    j = i + 1
                    if joined and nxt.word.islower() and nxt.low in self.last and not self.ambiguous(nxt.low):
                        j += 1
                    self.take(i, j)
                    i = j
                    continue
                if t.low in self.core_last:
                    self.take(i, i + 1)
            i += 1

    def propagate(self) -> None:
        """Every other occurrence of a name word found: anywhere for a proper name, capitalised mid-sentence
        only for a word that is also an English or clinical word. A capitalised word just before such an
        occurrence, unknown to every list, is taken with it ("Hana Rahimi" once "Rahimi" is known)."""
        words = {w for w in self.words if len(w) >= 2 and w not in _NOT_NAMES}
        for i, t in enumerate(self.toks):
            if t.low not in words or self.is_protected(i):
                continue
            mid_sentence_capital = t.cap and not _sentence_start(self.text, t) and i not in self.before_head
            if (self.ambiguous(t.low) or t.low in _EPONYMS) and not mid_sentence_capital:
                continue
            start = t.start
            if i > 0:
                prev = self.toks[i - 1]
                if (
                    _gap(self.text, prev, t) == " "
                    and prev.cap
                    and len(prev.word) >= 2
                    and not _sentence_start(self.text, prev)
                    and not self.ambiguous(prev.low)
                    and not self.is_protected(i - 1)
                ):
                    start = prev.start
            self.spans.append((start, t.end))


# ----------------------------------------------------------------------------------------------- scrubbing

_PLACEHOLDER = {"AGE": "90+"}


def _find(text: str) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    for label, pattern in _PATTERNS:
        for m in pattern.finditer(text):
            if pattern.groups and m.group(1) is not None:
                s, e = m.span(1)
            else:
                s, e = m.span()
            if label == "PLACE_LC":
                # a lower-case town after a residence cue ("we moved to tucson ."), not "lives in fear"
                if any(w in _NOT_PLACES for w in text[s:e].split()):
                    continue
                label = "ADDRESS"
            if e > s:
                found.append((s, e, label))
    names = _Names(text)
    names.cues()
    names.lists()
    names.propagate()
    found.extend((s, e, "NAME") for s, e in names.spans)
    return found


def _merge(found: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Overlapping or touching spans become one; the label of the longest part wins."""
    merged: list[list] = []
    for s, e, label in sorted(found, key=lambda f: (f[0], -f[1])):
        if merged and s < merged[-1][1]:
            last = merged[-1]
            if e - s > last[1] - last[0] and label != last[2]:
                last[2] = label
            last[1] = max(last[1], e)
        else:
            merged.append([s, e, label])
    return [(s, e, label) for s, e, label in merged]


def scrub(text: str) -> ScrubResult:
    """Replace identifiers in ``text`` with ``[CATEGORY]`` placeholders (ages over 89 with "90+")."""
    spans = _merge(_find(text))
    counts: dict[str, int] = {}
    parts = []
    pos = 0
    for s, e, label in spans:
        parts.append(text[pos:s])
        parts.append(_PLACEHOLDER.get(label, f"[{label}]"))
        counts[label] = counts.get(label, 0) + 1
        pos = e
    parts.append(text[pos:])
    return ScrubResult("".join(parts), counts, spans)


def scrub_text(text: str) -> str:
    return scrub(text).text
