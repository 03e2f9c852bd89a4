"""A deterministic synthetic region, loaded through the services' own command functions.

    kezek demo load --scale small|city|country --seed N

- **small** (``make run``): four districts of Almaty, 12 organisations, 240 applications; loads
  in seconds.
- **city**: Almaty's eight districts, about 600 organisations, 200,000 applications.
- **country**: the republic's 20 regions (cities of republican significance and oblasts, a few
  districts each), about 3,000 organisations, 1,000,000 applications.

What is generated: districts; organisations, state and private, of realistic kinds and sizes,
teaching in Kazakh, Russian or both in the region's shares, with fees; groups per age period
(birth year) and language with capacities and children already enrolled; applications whose
children's birth dates lean young (the children still waiting), with valid IINs, Kazakh and
Russian names, the region's language shares, one to three preferred organisations near the
family's home that have a fitting group, benefit claims (about 3 % out-of-turn, 10 %
first-priority) and filing moments spread over the years since each child's birth. Some
parents file for two children; a few applications are for special-needs or sanatorium groups
or a transfer.

How it is loaded (nothing is written around the services' rules):

1. organisations and groups through ``services.registry.commands`` (create_organization,
   add_group: validation, ledger rows, organization_changed events), one by one;
2. applications through ``services.applications.commands.import_applications_bulk``: every
   request passes the same validation as a parent's filing (IIN check digits, birth date,
   age, preferences checked against the registry's groups, one active application per
   child), and gets the same rows and application_filed event, in batches of 1,000 per
   transaction;
3. queue entries through ``services.queue.commands.enqueue_bulk`` from those events (the
   queue's handler, when the services run, finds them enqueued and changes nothing);
4. benefit claims filed more than 30 days ago are decided by a department officer
   (``verify_benefits_bulk``: the same checks, journal rows, events and feed entries as
   ``verify_benefit``) and the queue applies the decisions (``benefits_verified_bulk``).

**Filing moments.** A filing's moment is the database clock and the ledger refuses
back-dating, so the demo does not pretend these applications were filed now, nor does it
write past times into an ordinary filing. It is loaded as what it models: the queue
*imported from the portal that kept it before*. ``import_applications_bulk`` keeps the filing
moment recorded by the source system as data in ``filed_at`` (the queue orders by it), names
the source (``demo:<scale>:<seed>``) and the record's id in it, and the database stamps
``imported_at`` with its own clock; the journal row is ``application_imported`` at the
database clock, and every application shows ``"imported": true``. Only the system or an
operator can import (the CLI, this loader); no RPC method or HTTP route leads there, the
normal ``file_application`` still refuses a client-sent ``filed_at``, and a trigger refuses a
non-imported application whose ``filed_at`` is not its own transaction's clock.

5. the registry's queue read model is then brought up to date from the queue's snapshots the
   way ``kezek registry reconcile --repair`` does it (``project_registry``: the queue's own
   ``export_entries`` and the registry's own storage functions, in this process, so the
   services need not run). The events of steps 2-4 still reach the registry when the services
   run, and change nothing there: each carries a revision the read model already has. Without
   this step a city's few hundred thousand events would take the registry hours to apply one
   by one; with it the region passes ``kezek registry reconcile`` as soon as the load ends.
   Statistics facts are not written by it: they count events as they are applied.

The loader is deterministic for a seed and a scale (the date is the database's local date:
run twice on the same day, it generates the same data) and idempotent: an import is keyed by
``(source, ref)``, organisations are matched by name, address and district, so loading again
stores nothing new, and an interrupted load can simply be run again. It refuses a database
whose registry holds organisations of another region and none of this one (``DemoRefused``):
the two regions' generated people would share IINs and phones.

Measured on the project machine (2 cores): docs/performance.md.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable
from zoneinfo import ZoneInfo

from sqlalchemy import text

from services.common.errors import Conflict

TZ = ZoneInfo("Asia/Almaty")
SYSTEM = {"id": "system:demo", "role": "system", "organization_id": None, "request_id": None}
OFFICER = {"id": "officer:demo-loader", "role": "officer", "organization_id": None,
           "request_id": None}
BATCH = 1000

# -- the geography -------------------------------------------------------------------------------

# (district, weight: share of the city's young children); Almaty's eight districts
ALMATY = [
    ("Алатау ауданы", 16), ("Алмалы ауданы", 10), ("Әуезов ауданы", 14),
    ("Бостандық ауданы", 14), ("Жетісу ауданы", 9), ("Медеу ауданы", 10),
    ("Наурызбай ауданы", 12), ("Түрксіб ауданы", 15),
]
# (region, share of the country's young children, Kazakh-language share, districts)
REGIONS = [
    ("Алматы", 11, 0.62, [d for d, _ in ALMATY]),
    ("Астана", 9, 0.75, ["Алматы ауданы", "Байқоңыр ауданы", "Есіл ауданы", "Сарыарқа ауданы",
                         "Нұра ауданы"]),
    ("Шымкент", 8, 0.85, ["Абай ауданы", "Әл-Фараби ауданы", "Еңбекші ауданы",
                          "Қаратау ауданы", "Тұран ауданы"]),
    ("Түркістан облысы", 13, 0.93, ["Түркістан қаласы", "Сайрам ауданы", "Сарыағаш ауданы",
                                    "Мақтаарал ауданы", "Төлеби ауданы", "Қазығұрт ауданы"]),
    ("Алматы облысы", 9, 0.76, ["Қонаев қаласы", "Іле ауданы", "Қарасай ауданы",
                                "Талғар ауданы", "Еңбекшіқазақ ауданы"]),
    ("Жамбыл облысы", 6, 0.82, ["Тараз қаласы", "Байзақ ауданы", "Жамбыл ауданы",
                                "Шу ауданы"]),
    ("Қарағанды облысы", 5, 0.52, ["Қарағанды қаласы", "Теміртау қаласы", "Абай ауданы",
                                   "Бұқар жырау ауданы"]),
    ("Ақтөбе облысы", 5, 0.78, ["Ақтөбе қаласы", "Қарғалы ауданы", "Мәртөк ауданы"]),
    ("Атырау облысы", 4, 0.93, ["Атырау қаласы", "Жылыой ауданы", "Мақат ауданы"]),
    ("Маңғыстау облысы", 5, 0.9, ["Ақтау қаласы", "Жаңаөзен қаласы", "Мұнайлы ауданы"]),
    ("Батыс Қазақстан облысы", 3, 0.76, ["Орал қаласы", "Бөрлі ауданы", "Теректі ауданы"]),
    ("Қызылорда облысы", 5, 0.96, ["Қызылорда қаласы", "Қазалы ауданы", "Шиелі ауданы"]),
    ("Шығыс Қазақстан облысы", 3, 0.45, ["Өскемен қаласы", "Глубокое ауданы",
                                         "Зайсан ауданы"]),
    ("Абай облысы", 3, 0.72, ["Семей қаласы", "Аягөз ауданы", "Бесқарағай ауданы"]),
    ("Павлодар облысы", 3, 0.42, ["Павлодар қаласы", "Екібастұз қаласы",
                                  "Павлодар ауданы"]),
    ("Қостанай облысы", 3, 0.38, ["Қостанай қаласы", "Рудный қаласы", "Қостанай ауданы"]),
    ("Солтүстік Қазақстан облысы", 2, 0.35, ["Петропавл қаласы", "Айыртау ауданы",
                                             "Есіл ауданы"]),
    ("Ақмола облысы", 3, 0.52, ["Көкшетау қаласы", "Степногорск қаласы",
                                "Целиноград ауданы"]),
    ("Жетісу облысы", 4, 0.76, ["Талдықорған қаласы", "Текелі қаласы", "Ескелді ауданы"]),
    ("Ұлытау облысы", 1, 0.78, ["Жезқазған қаласы", "Сәтбаев қаласы", "Ұлытау ауданы"]),
]
STREETS = ["Абай даңғылы", "Төле би көшесі", "Сәтбаев көшесі", "Жандосов көшесі",
           "Розыбакиев көшесі", "Гагарин даңғылы", "Райымбек даңғылы", "Әл-Фараби даңғылы",
           "Байзақов көшесі", "Мұқанов көшесі", "Тимирязев көшесі", "Науаи көшесі",
           "Тәуелсіздік көшесі", "Достық даңғылы", "Құрманғазы көшесі", "Жібек жолы көшесі",
           "Бейбітшілік көшесі", "Наурыз көшесі", "Шұғыла шағын ауданы", "Самал шағын ауданы"]


@dataclass(frozen=True)
class Scale:
    organizations: int
    applications: int
    regions: tuple[str, ...]     # which REGIONS (by name)
    districts: int | None        # Almaty only: how many of its districts
    qualified: bool              # district names carry the region ("Астана, Есіл ауданы")


SCALES = {
    "small": Scale(12, 240, ("Алматы",), 4, False),
    "city": Scale(600, 200_000, ("Алматы",), None, False),
    "country": Scale(3000, 1_000_000, tuple(r[0] for r in REGIONS), None, True),
}


@dataclass(frozen=True)
class District:
    name: str
    region: str
    weight: float
    kk_share: float


def districts(scale: str) -> list[District]:
    spec = SCALES[scale]
    out = []
    for region, weight, kk_share, names in REGIONS:
        if region not in spec.regions:
            continue
        if region == "Алматы":
            chosen = ALMATY[: spec.districts] if spec.districts else ALMATY
        else:
            # the regional centre holds about half of a region's children
            chosen = [(n, 5 if i == 0 else 5 / max(1, len(names) - 1)) for i, n in
                      enumerate(names)]
        total = sum(w for _, w in chosen)
        for name, w in chosen:
            out.append(District(f"{region}, {name}" if spec.qualified else name, region,
                                weight * w / total, kk_share))
    return out


# -- people --------------------------------------------------------------------------------------

KK_SURNAMES = ["Ахметов", "Нұрланов", "Серікбаев", "Жақсыбеков", "Оспанов", "Бекболатов",
               "Тоқтаров", "Әбілов", "Қасымов", "Мұратов", "Садықов", "Есенов", "Төлегенов",
               "Жұмабаев", "Искаков", "Омаров", "Сейітов", "Құдайбергенов", "Абдрахманов",
               "Байжанов", "Қалиев", "Мамыров", "Нұрғалиев", "Смағұлов", "Тұрсынов",
               "Ержанов", "Мұхамеджанов", "Әлиев", "Рахымов", "Байменов"]
KK_SURNAMES_ULY = ["Серікұлы", "Болатұлы", "Маратұлы", "Ерланұлы", "Нұрланұлы", "Асқарұлы"]
RU_SURNAMES = ["Иванов", "Петров", "Смирнов", "Ковалев", "Ким", "Павлов", "Федоров", "Морозов",
               "Волков", "Соколов", "Цой", "Пак", "Шевченко", "Бондаренко", "Каримов",
               "Юсупов", "Галиев", "Ли", "Никитин", "Кузнецов"]
KK_MALE = ["Арман", "Нұрсұлтан", "Ерлан", "Дәурен", "Алихан", "Темірлан", "Санжар", "Әли",
           "Ерасыл", "Әмір", "Нұрислам", "Алдияр", "Ақжол", "Бекзат", "Айсұлтан", "Ислам",
           "Ансар", "Абылай", "Мағжан", "Рауан", "Алан", "Али", "Омар", "Мейірхан"]
KK_FEMALE = ["Айгерім", "Жансая", "Аружан", "Дана", "Әйгерім", "Томирис", "Медина", "Сабина",
             "Айару", "Інжу", "Аяла", "Нұрай", "Асылым", "Айша", "Зере", "Раяна", "Хадиша",
             "Мадина", "Әмина", "Аиша", "Жания", "Айлин", "Ақбота", "Сафия"]
RU_MALE = ["Александр", "Максим", "Артём", "Иван", "Дмитрий", "Михаил", "Тимур", "Марк",
           "Даниил", "Лев", "Роман", "Кирилл"]
RU_FEMALE = ["Анна", "Мария", "София", "Виктория", "Алиса", "Полина", "Ева", "Варвара",
             "Милана", "Амира", "Дарья", "Вероника"]
KK_FATHER = ["Болат", "Серік", "Марат", "Ерлан", "Нұрлан", "Асқар", "Бауыржан", "Қайрат",
             "Дархан", "Ержан", "Талғат", "Ғалым"]
RU_FATHER = ["Сергей", "Андрей", "Игорь", "Алексей", "Виктор", "Олег", "Руслан", "Тимур"]


def _kk_patronymic(father: str, sex: str) -> str:
    return father + ("ұлы" if sex == "M" else "қызы")


# the Russian-style patronymic stem of each father's name (Kazakh names as in passports)
RU_PATRONYMIC_STEM = {
    "Сергей": "Сергеев", "Андрей": "Андреев", "Игорь": "Игорев", "Алексей": "Алексеев",
    "Виктор": "Викторов", "Олег": "Олегов", "Руслан": "Русланов", "Тимур": "Тимуров",
    "Болат": "Болатов", "Серік": "Сериков", "Марат": "Маратов", "Ерлан": "Ерланов",
    "Нұрлан": "Нурланов", "Асқар": "Аскаров", "Бауыржан": "Бауржанов", "Қайрат": "Кайратов",
    "Дархан": "Дарханов", "Ержан": "Ержанов", "Талғат": "Талгатов", "Ғалым": "Галымов",
}


def _ru_patronymic(father: str, sex: str) -> str:
    return RU_PATRONYMIC_STEM[father] + ("ич" if sex == "M" else "на")


def _female(surname: str) -> str:
    if surname.endswith(("ов", "ев", "ин")):
        return surname + "а"
    return surname


def family_name(rng: random.Random, language: str) -> tuple[str, str, bool]:
    """(surname as for a man, father's first name, Kazakh-style name) of a family."""
    kazakh = language == "kk" or rng.random() < 0.55  # many Russian-speaking families are Kazakh
    if kazakh:
        if rng.random() < 0.12:
            return rng.choice(KK_SURNAMES_ULY), rng.choice(KK_FATHER), True
        return rng.choice(KK_SURNAMES), rng.choice(KK_FATHER), True
    return rng.choice(RU_SURNAMES), rng.choice(RU_FATHER), False


def person_name(rng: random.Random, family: tuple[str, str, bool], sex: str,
                russian_style: bool) -> str:
    """Surname (in the person's form), first name and patronymic."""
    surname, father, kazakh = family
    if sex == "F":
        surname = surname[:-3] + "қызы" if surname.endswith("ұлы") else _female(surname)
    if kazakh:
        first = rng.choice(KK_MALE if sex == "M" else KK_FEMALE)
        patronymic = (_ru_patronymic(father, sex) if russian_style
                      else _kk_patronymic(father, sex))
    else:
        first = rng.choice(RU_MALE if sex == "M" else RU_FEMALE)
        patronymic = _ru_patronymic(father, sex)
    return f"{surname} {first} {patronymic}"


# -- organisations -------------------------------------------------------------------------------

STATE_NAMES = "№{n} бөбекжай-балабақшасы"
PRIVATE_NAMES_KK = ["Айгөлек", "Балапан", "Күншуақ", "Ертөстік", "Болашақ", "Нұр", "Ақбота",
                    "Балдырған", "Қарлығаш", "Құлыншақ", "Жұлдыз", "Бәйтерек", "Шаттық",
                    "Айналайын", "Мөлдір", "Бөбек", "Арай", "Тұмар"]
PRIVATE_NAMES_RU = ["Солнышко", "Радуга", "Теремок", "Умка", "Звёздочка", "Капелька",
                    "Улыбка", "Сказка", "Росток", "Непоседы"]
AGE_GROUP_NAMES = {0: "Бөбектер тобы", 1: "Бөбектер тобы", 2: "Кіші топ", 3: "Ортаңғы топ",
                   4: "Ересек топ", 5: "Мектепалды даярлық тобы", 6: "Мектепалды даярлық тобы"}
# how the groups of an organisation spread over age periods (age = this year - birth year)
GROUP_AGE_WEIGHTS = [3, 12, 17, 19, 19, 20, 10]
CHILD_AGE_WEIGHTS = [27, 26, 20, 13, 8, 4.5, 1.5]  # the children still waiting, by age


def _language_mix(rng: random.Random, kk_share: float) -> list[str]:
    roll = rng.random()
    kk_only = max(0.05, kk_share - 0.2)
    ru_only = max(0.05, 1 - kk_share - 0.2)
    if roll < kk_only:
        return ["kk"]
    if roll < kk_only + ru_only:
        return ["ru"]
    return ["kk", "ru"]


def _capacity(age: int, kind: str) -> int:
    base = 15 if age <= 1 else 20 if age == 2 else 25
    return min(base, 15) if kind == "mini_center" else base


def organizations(rng: random.Random, scale: str, this_year: int) -> list[dict[str, Any]]:
    """The organisations of the region, with groups and a position in their district."""
    spec = SCALES[scale]
    regions = districts(scale)
    total = sum(d.weight for d in regions)
    counts = [max(1, round(spec.organizations * d.weight / total)) for d in regions]
    state_share = 0.4 if scale != "country" else 0.6
    orgs = []
    state_number = 0
    private_names: dict[str, int] = {}
    for district, count in zip(regions, counts):
        city = district.region
        for _ in range(count):
            state = rng.random() < state_share
            roll = rng.random()
            if state:
                kind = ("kindergarten" if roll < 0.86 else "nursery" if roll < 0.9
                        else "special" if roll < 0.95 else "sanatorium")
            else:
                kind = "kindergarten" if roll < 0.72 else "mini_center"
            languages = _language_mix(rng, district.kk_share)
            if state:
                state_number += 1
                name = STATE_NAMES.format(n=state_number)
                fee = round(rng.uniform(10_000, 18_000), -2)  # parents pay for meals
                n_groups = rng.randint(6, 14) if kind != "nursery" else rng.randint(3, 6)
            else:
                pool = PRIVATE_NAMES_KK if languages != ["ru"] else PRIVATE_NAMES_RU
                base = rng.choice(pool)
                private_names[base] = private_names.get(base, 0) + 1
                suffix = f"-{private_names[base]}" if private_names[base] > 1 else ""
                name = (f"«{base}{suffix}» балабақшасы" if kind == "kindergarten"
                        else f"«{base}{suffix}» шағын орталығы")
                # most private kindergartens work under the state order (a co-payment)
                fee = (round(rng.uniform(15_000, 45_000), -3) if rng.random() < 0.6
                       else round(rng.uniform(70_000, 180_000), -3))
                n_groups = rng.randint(2, 6) if kind == "kindergarten" else rng.randint(1, 3)
            groups = []
            ages = rng.choices(range(7), weights=GROUP_AGE_WEIGHTS, k=n_groups)
            if kind == "nursery":
                ages = [min(a, 2) for a in ages]
            seen: dict[tuple[str, str, str], int] = {}
            for age in sorted(ages):
                language = (languages[0] if len(languages) == 1
                            else "kk" if rng.random() < district.kk_share else "ru")
                group_type = "general"
                if kind in ("special", "sanatorium") and rng.random() < 0.6:
                    group_type = kind
                label = (AGE_GROUP_NAMES[age], language, group_type)
                seen[label] = seen.get(label, 0) + 1
                number = seen[label]
                capacity = _capacity(age, kind)
                enrolled = (rng.randint(0, 5) if age == 0 else
                            capacity - rng.choices([0, 1, 2, 3, 5], weights=[45, 25, 15, 10, 5])[0])
                lang_name = "қазақ тілінде" if language == "kk" else "орыс тілінде"
                special = {"special": ", түзету", "sanatorium": ", санаторлық"}.get(group_type,
                                                                                     "")
                groups.append({
                    "name": f"{AGE_GROUP_NAMES[age]}{f' №{number}' if number > 1 else ''} "
                            f"({lang_name}{special})",
                    "group_type": group_type, "birth_year": this_year - age,
                    "language": language, "capacity": capacity, "enrolled": enrolled,
                })
            languages = sorted({g["language"] for g in groups}) or languages
            street = rng.choice(STREETS)
            address = (f"{city}, {district.name.split(', ')[-1]}, {street}, "
                       f"{rng.randint(1, 250)}")
            orgs.append({
                "organization": {
                    "name": name, "address": address, "district": district.name,
                    "ownership": "state" if state else "private", "kind": kind,
                    "languages": languages, "monthly_fee_kzt": int(fee),
                },
                "groups": groups,
                "position": (rng.random(), rng.random()),
            })
        _cover(rng, orgs[-count:], district, this_year)
    return orgs


def _cover(rng: random.Random, orgs: list[dict[str, Any]], district: District,
           this_year: int) -> None:
    """Make sure some organisation of the district has a general group for every age period
    and language the district's families ask for (a small region has few organisations)."""
    for language in ("kk", "ru"):
        for age in range(7):
            if any(g["birth_year"] == this_year - age and g["language"] == language
                   and g["group_type"] == "general" for o in orgs for g in o["groups"]):
                continue
            hosts = [o for o in orgs if language in o["organization"]["languages"]
                     and o["organization"]["kind"] in ("kindergarten", "nursery")] or \
                [o for o in orgs if o["organization"]["kind"] == "kindergarten"] or orgs
            host = rng.choice(hosts)
            if language not in host["organization"]["languages"]:
                host["organization"]["languages"] = sorted(
                    host["organization"]["languages"] + [language])
            capacity = _capacity(age, host["organization"]["kind"])
            lang_name = "қазақ тілінде" if language == "kk" else "орыс тілінде"
            host["groups"].append({
                "name": f"{AGE_GROUP_NAMES[age]} №{len(host['groups']) + 1} ({lang_name})",
                "group_type": "general", "birth_year": this_year - age, "language": language,
                "capacity": capacity,
                "enrolled": rng.randint(0, 5) if age == 0 else capacity - rng.randint(0, 2)})


def org_key(org: dict[str, Any]) -> tuple[str, str, str]:
    return (org["name"], org["address"], org["district"])


# -- applications --------------------------------------------------------------------------------

BENEFIT_DOCUMENTS = {
    "conscript_servicemen": "Әскери істер басқармасының анықтамасы",
    "special_state_bodies": "Жұмыс орнынан анықтама",
    "disabled_legal_representative": "МӘС анықтамасы",
    "orphans": "Қорғаншылық туралы шешім",
    "large_families": "Көп балалы отбасы куәлігі",
    "special_educational_needs": "ПМПК қорытындысы",
}
HOUR_WEIGHTS = [1, 0.5, 0.3, 0.2, 0.2, 0.3, 1, 3, 6, 9, 10, 10, 8, 7, 7, 7, 7, 6, 6, 7, 8, 8, 6,
                3]
OPERATOR_CODES = ["701", "702", "705", "707", "708", "747", "771", "775", "776", "777", "778"]
SERIALS_PER_PART = 2500  # IIN serials (digits 8-11) per load part: parts never collide


@dataclass(frozen=True)
class Skeleton:
    """What decides an application's place in the order; the rest is drawn in that order."""

    filed_at: dt.datetime
    n: int
    district: int
    language: str
    queue_type: str
    birth_date: dt.date
    sex: str
    benefit: str | None


def skeletons(rng: random.Random, count: int, regions: list[District], today: dt.date,
              categories: dict[str, list[str]]) -> list[Skeleton]:
    """``count`` applications' skeletons, sorted by filing moment."""
    weights = [d.weight for d in regions]
    midnight = dt.datetime.combine(today, dt.time(), tzinfo=TZ)
    out = []
    for n in range(count):
        d = rng.choices(range(len(regions)), weights=weights)[0]
        language = "kk" if rng.random() < regions[d].kk_share else "ru"
        roll = rng.random()
        queue_type = ("general" if roll < 0.95 else "transfer" if roll < 0.97
                      else "special" if roll < 0.99 else "sanatorium")
        age = rng.choices(range(7), weights=CHILD_AGE_WEIGHTS)[0]
        days = age * 365 + rng.randint(7, 364)
        birth = today - dt.timedelta(days=min(days, 7 * 365 - 30))
        if rng.random() < 0.85:  # most parents apply in the child's first months
            delay = 10 + rng.expovariate(1 / 110)
        else:
            delay = rng.uniform(0, (today - birth).days)
        filed_day = birth + dt.timedelta(days=int(delay))
        if filed_day >= today:
            filed_day = birth + dt.timedelta(days=rng.randint(0, max(0, (today - birth).days - 1)))
        hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
        filed_at = dt.datetime.combine(filed_day, dt.time(hour, rng.randint(0, 59),
                                                          rng.randint(0, 59),
                                                          rng.randint(0, 999_999)), tzinfo=TZ)
        filed_at = min(filed_at, midnight - dt.timedelta(microseconds=n + 1))
        roll = rng.random()
        benefit = None
        if roll < 0.03 and categories.get("out_of_turn"):
            benefit = rng.choice(categories["out_of_turn"])
        elif roll < 0.13 and categories.get("first_priority"):
            benefit = rng.choice(categories["first_priority"])
        out.append(Skeleton(filed_at, n, d, language, queue_type, birth, rng.choice("MF"),
                            benefit))
    out.sort(key=lambda s: (s.filed_at, s.n))
    return out


class Fitting:
    """Organisations with a group for (district, birth year, language, group type), with their
    positions: where families choose from (registry data, read back after loading it)."""

    def __init__(self, orgs: list[dict[str, Any]], ids: list[int]):
        self.by_key: dict[tuple, list[tuple[int, float, float, int]]] = {}
        for org, org_id in zip(orgs, ids):
            x, y = org["position"]
            for g in org["groups"]:
                key = (org["organization"]["district"], g["birth_year"], g["language"],
                       g["group_type"])
                rows = self.by_key.setdefault(key, [])
                if not rows or rows[-1][0] != org_id:
                    rows.append((org_id, x, y, g.get("id") or 0))

    def near(self, rng: random.Random, key: tuple, exclude: int | None = None
             ) -> list[int]:
        rows = [r for r in self.by_key.get(key, []) if r[0] != exclude]
        if not rows:
            return []
        hx, hy = rng.random(), rng.random()
        rows.sort(key=lambda r: (r[1] - hx) ** 2 + (r[2] - hy) ** 2)
        want = rng.choices([1, 2, 3], weights=[20, 25, 55])[0]
        pool = rows[: max(want, 5)]
        chosen: list[int] = []
        while pool and len(chosen) < want:  # the nearest are the likelier choices
            pick = pool.pop(min(len(pool) - 1, int(rng.expovariate(1.2))))
            chosen.append(pick[0])
        return chosen

    def any_group(self, rng: random.Random, key: tuple) -> tuple[int, int] | None:
        rows = self.by_key.get(key, [])
        if not rows:
            return None
        org_id, _, _, group_id = rng.choice(rows)
        return org_id, group_id


class Families:
    """Parents: new ones with unique IINs and phones; some file for a second child."""

    def __init__(self, part: int):
        self.part = part
        self.serials: dict[tuple[dt.date, str], int] = {}
        self.count = 0
        self.recent: dict[tuple[int, str], list[dict[str, Any]]] = {}

    def iin(self, born: dt.date, sex: str) -> str:
        from services.applications.domain import make_iin

        while True:
            used = self.serials.get((born, sex), 0)
            if used >= SERIALS_PER_PART:
                raise RuntimeError(f"more than {SERIALS_PER_PART} people born {born} ({sex})")
            self.serials[(born, sex)] = used + 1
            try:
                return make_iin(born, sex, self.part * SERIALS_PER_PART + used)
            except ValueError:
                continue  # no check digit exists for this serial

    def parent(self, rng: random.Random, district: int, language: str, today: dt.date,
               child_birth: dt.date) -> dict[str, Any]:
        recent = self.recent.setdefault((district, language), [])
        if recent and rng.random() < 0.1:
            return rng.choice(recent)
        sex = "F" if rng.random() < 0.72 else "M"
        born = child_birth - dt.timedelta(days=rng.randint(21 * 365, 42 * 365))
        family = family_name(rng, language)
        a = self.count
        self.count += 1
        phone = (f"+7{OPERATOR_CODES[a % len(OPERATOR_CODES)]}{self.part}"
                 f"{a // len(OPERATOR_CODES):06d}")
        parent = {"iin": self.iin(born, sex), "phone": phone, "sex": sex, "family": family,
                  "russian_style": language == "ru"}
        parent["full_name"] = person_name(rng, family, sex, parent["russian_style"])
        recent.append(parent)
        if len(recent) > 50:
            recent.pop(0)
        return parent


def _desired_start(rng: random.Random, birth: dt.date, today: dt.date) -> dt.date:
    for years in (2, 3):
        start = dt.date(birth.year + years, 9, 1)
        if start > today:
            return start
    month = today.month + rng.randint(1, 6)
    return dt.date(today.year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def build_records(rng: random.Random, items: list[Skeleton], regions: list[District],
                  fitting: Fitting, families: Families, today: dt.date, source: str,
                  part: int) -> list[dict[str, Any]]:
    """Import records (ref, source moment, api.md New application) for these skeletons."""
    records = []
    for s in items:
        district = regions[s.district]
        queue_type = s.queue_type
        group_type = {"special": "special", "sanatorium": "sanatorium"}.get(queue_type,
                                                                             "general")
        key = (district.name, s.birth_date.year, s.language, group_type)
        current = None
        if queue_type == "transfer":
            current = fitting.any_group(rng, key)
        preferred = fitting.near(rng, key, exclude=current[0] if current else None)
        if not preferred or (queue_type == "transfer" and current is None):
            queue_type = "general"  # nothing of that kind nearby: the family queues generally
            current = None
            key = (district.name, s.birth_date.year, s.language, "general")
            preferred = fitting.near(rng, key)
        if not preferred:
            continue  # no organisation teaches this age in this language in the district
        parent = families.parent(rng, s.district, s.language, today, s.birth_date)
        child_name = person_name(rng, parent["family"], s.sex, parent["russian_style"])
        benefit = None
        if s.benefit is not None:
            benefit = {"category": s.benefit,
                       "document": f"{BENEFIT_DOCUMENTS.get(s.benefit, 'Анықтама')} "
                                   f"№{rng.randint(1000, 999_999)}"}
        application = {
            "applicant": {"iin": parent["iin"], "full_name": parent["full_name"],
                          "phone": parent["phone"]},
            "child": {"iin": families.iin(s.birth_date, s.sex), "full_name": child_name,
                      "birth_date": s.birth_date.isoformat()},
            "queue_type": queue_type,
            "language": s.language,
            "district": district.name,
            "preferred_organizations": preferred,
            "desired_start": _desired_start(rng, s.birth_date, today).isoformat(),
            "benefit": benefit,
        }
        if current is not None:
            application["current_organization_id"] = current[0]
            application["current_group_id"] = current[1]
        records.append({"ref": f"{part}-{s.n:07d}", "filed_at": s.filed_at.isoformat(),
                        "application": application})
    return records


# -- loading -------------------------------------------------------------------------------------

class PreferenceCheck:
    """registry.check_preferences against the registry's groups read once into memory (the
    same rule: every chosen organisation exists and has a group of the child's birth year, the
    language and a group type the queue type fits)."""

    def __init__(self, views: list[dict[str, Any]], max_preferred: int):
        self.max_preferred = max_preferred
        self.groups = {int(v["id"]): {(int(g["birth_year"]), g["language"], g["group_type"])
                                      for g in v.get("groups") or []} for v in views}

    def __call__(self, organization_ids, birth_year, language, queue_type) -> None:
        from services.common.errors import BadInput
        from services.registry import domain

        ids, birth_year, language, queue_type = domain.validate_preferences(
            organization_ids, birth_year, language, queue_type, self.max_preferred)
        group_type = domain.fitting_group_type(queue_type)
        for organization_id in ids:
            if organization_id not in self.groups:
                raise BadInput(f"organisation {organization_id} does not exist",
                               field="preferred_organizations")
            if (birth_year, language, group_type) not in self.groups[organization_id]:
                raise BadInput(
                    f"organisation {organization_id} has no {group_type} group for children "
                    f"born in {birth_year} taught in {language}", field="preferred_organizations")


def registry_views(registry, reg_settings) -> list[dict[str, Any]]:
    """Every organisation with its groups, through the registry's own read command."""
    from services.registry import commands as reg_commands

    views, page = [], 1
    while True:
        result = reg_commands.list_organizations(registry, {}, page, 500, reg_settings)
        views.extend(result["items"])
        if page * 500 >= result["total"]:
            return views
        page += 1


class DemoRefused(Conflict):
    """The database holds another region: its people would collide with this one's."""


def _load_organizations(registry, orgs: list[dict[str, Any]], reg_settings,
                        log: Callable[[str], None]) -> list[dict[str, Any]]:
    from services.registry import commands as reg_commands

    existing = {org_key(v): v for v in registry_views(registry, reg_settings)}
    wanted = {org_key(o["organization"]) for o in orgs}
    strangers = [k for k in existing if k not in wanted]
    if strangers and not any(k in wanted for k in existing):
        # another region's people would collide with this one's (IINs, phones): refuse; a
        # few organisations added by hand next to this demo region are no reason to
        raise DemoRefused(
            f"the registry holds {len(strangers)} organisation(s) that are not this demo "
            f"region (e.g. {strangers[0][0]!r}); load a demo region into a fresh database")
    created = 0
    for org in orgs:
        view = existing.get(org_key(org["organization"]))
        if view is None:
            view = reg_commands.create_organization(registry, org["organization"], SYSTEM)
            created += 1
        have = {g["name"] for g in view.get("groups") or []}
        for group in org["groups"]:
            if group["name"] not in have:
                reg_commands.add_group(registry, view["id"], group, SYSTEM)
        if created and created % 500 == 0:
            log(f"  {created} organisations created")
    views = {org_key(v): v for v in registry_views(registry, reg_settings)}
    return [views[org_key(o["organization"])] for o in orgs]


def _imported(engine, source: str, refs: list[str], prefix: str | None = None) -> int:
    """How many of these refs (or of all refs with this prefix) were imported from source."""
    with engine.connect() as conn:
        if prefix is not None:
            return conn.execute(text(
                "SELECT count(*) FROM applications.applications WHERE import_source = :s "
                "AND import_ref LIKE :p"), {"s": source, "p": prefix + "%"}).scalar()
        return conn.execute(text(
            "SELECT count(*) FROM applications.applications WHERE import_source = :s "
            "AND import_ref = ANY(CAST(:r AS text[]))"), {"s": source, "r": refs}).scalar()


def _undecided(engine, source: str, prefix: str, before: dt.datetime) -> list[tuple[str, str]]:
    """(number, ref) of imported applications whose benefit claim, filed before ``before``,
    no officer has decided yet."""
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT a.number, a.import_ref FROM applications.applications a "
            "JOIN applications.benefit_claims b ON b.application_number = a.number "
            "WHERE a.import_source = :s AND a.import_ref LIKE :p AND b.status = 'claimed' "
            "AND a.filed_at < :before ORDER BY a.number"),
            {"s": source, "p": prefix + "%", "before": before}).all()]


def _retrying(log: Callable[[str], None], fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Call fn again while the database is unreachable (restarted, too many clients): every
    step of the load is idempotent, so a batch whose commit was lost is simply done again
    (its applications are then skipped as imported, their events enqueue them)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    delay, waited = 1.0, 0.0
    while True:
        try:
            return fn(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            if waited > 300:
                raise
            log(f"  database unavailable ({str(exc).splitlines()[0][:120]}); again in "
                f"{delay:.0f} s")
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 30.0)


def project_registry(config: dict) -> int:
    """Bring the registry's queue read model up to the queue's snapshots (reconcile --repair
    of the ``queue`` model, sources read in this process); the rows written. A row an event
    changed meanwhile is newer than the snapshot and is left as it is."""
    from functools import partial
    from types import SimpleNamespace

    from services.common.db import DatabaseAccess, get_engine
    from services.queue import commands as queue_commands
    from services.registry import reconcile

    # what reconcile asks over RPC (rpc.queue.export_entries), called here in this process
    queue_db = DatabaseAccess(get_engine(config["DB_URL"]), "queue")
    sources = SimpleNamespace(queue=SimpleNamespace(
        export_entries=partial(queue_commands.export_entries, queue_db)))
    report = reconcile.reconcile(config, repair_rows=True, models=["queue"], settle=0,
                                 rpc=sources, out=None)
    return report.repaired


def local_today(engine) -> dt.date:
    with engine.connect() as conn:
        return conn.execute(text("SELECT (clock_timestamp() AT TIME ZONE 'Asia/Almaty')::date")
                            ).scalar()


def load(config: dict, scale: str = "small", seed: int = 1, *, applications: int | None = None,
         part: int = 0, batch: int = BATCH, verify_benefits: bool = True,
         project: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Load (or complete) the demo region; returns a summary with the time of each phase.

    ``applications`` overrides the scale's number; ``part`` (0-3) loads another, disjoint set
    of applications into the same region (the growth benchmark adds 50,000, then 150,000,
    then 600,000): parts never share an IIN, a phone or an import reference. ``project=False``
    leaves the registry's queue read model to the events (benchmarks that do not read it).
    """
    from services.applications import commands as app_commands
    from services.common.config import settings
    from services.common.db import DatabaseAccess, get_engine
    from services.queue import commands as queue_commands
    from services.registry import commands as reg_commands
    from services.registry.domain import RegistrySettings

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}")
    if not 0 <= part < 10_000 // SERIALS_PER_PART:
        raise ValueError("part must be 0..3")
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    spec = SCALES[scale]
    count = spec.applications if applications is None else int(applications)
    engine = get_engine(config["DB_URL"])
    registry = DatabaseAccess(engine, "registry")
    apps_db = DatabaseAccess(engine, "applications")
    queue_db = DatabaseAccess(engine, "queue")
    kezek = settings(config)
    reg_settings = RegistrySettings.from_settings(kezek)
    max_preferred = int(kezek.get("MAX_PREFERRED_ORGANIZATIONS", 3))
    source = f"demo:{scale}:{seed}"
    today = local_today(engine)
    timings: dict[str, float] = {}
    started = clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - clock, 1)
        clock = now

    regions = districts(scale)
    reg_commands.seed_districts(registry, [d.name for d in regions])
    orgs = organizations(random.Random(f"{seed}:{scale}:organizations"), scale, today.year)
    log(f"{len(orgs)} organisations, {sum(len(o['groups']) for o in orgs)} groups")
    views = _retrying(log, _load_organizations, registry, orgs, reg_settings, log)
    for org, view in zip(orgs, views):  # group ids, for transfer applications
        ids = {g["name"]: g["id"] for g in view["groups"]}
        for g in org["groups"]:
            g["id"] = ids[g["name"]]
    lap("organizations")

    prefix = f"{part}-"
    categories: dict[str, list[str]] = {}
    for category in app_commands.benefit_categories(apps_db):
        categories.setdefault(category["tier"], []).append(category["code"])
    rng = random.Random(f"{seed}:{scale}:{part}:skeletons")
    items = skeletons(rng, count, regions, today, categories)
    lap("generate")
    summary: dict[str, Any] = {
        "scale": scale, "seed": seed, "part": part, "source": source,
        "organizations": len(orgs), "groups": sum(len(o["groups"]) for o in orgs),
        "districts": len(regions)}
    cutoff = dt.datetime.combine(today - dt.timedelta(days=30), dt.time(), tzinfo=TZ)
    last_batch = [f"{part}-{s.n:07d}" for s in items[-batch:]]
    if _imported(engine, source, last_batch) and not _undecided(engine, source, prefix, cutoff):
        # batches commit in order: the last one is in, so is everything (the second `make run`)
        summary.update({"loaded": False, "applications": 0,
                        "already_loaded": _imported(engine, source, [], prefix),
                        "registry_rows_projected":
                            _retrying(log, project_registry, config) if project else 0,
                        "seconds": timings})
        return summary

    fitting = Fitting(orgs, [v["id"] for v in views])
    check = PreferenceCheck(views, max_preferred)
    families = Families(part)
    detail_rng = random.Random(f"{seed}:{scale}:{part}:details")
    filed = skipped = enqueued = 0
    refused: list[dict[str, Any]] = []
    claims = 0  # applications claiming a benefit
    import_seconds = queue_seconds = 0.0

    def enqueue(events: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
        t = time.monotonic()
        return (_retrying(log, queue_commands.enqueue_bulk, queue_db, events, batch=batch),
                time.monotonic() - t)

    def collect(future) -> None:
        nonlocal enqueued, queue_seconds
        queued, seconds = future.result()
        enqueued += queued["enqueued"]
        refused.extend(queued["refused"])
        queue_seconds += seconds

    # the queue enqueues batch k while the next batch is generated and imported (two
    # connections, two schemas): the database and Python work side by side
    from concurrent.futures import ThreadPoolExecutor

    pending = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            records = build_records(detail_rng, chunk, regions, fitting, families, today,
                                    source, part)
            t0 = time.monotonic()
            result = _retrying(
                log, app_commands.import_applications_bulk, apps_db, records, SYSTEM,
                source=source, check_preferences=check, batch=batch,
                max_preferred=max_preferred)
            import_seconds += time.monotonic() - t0
            if pending is not None:
                collect(pending)
            pending = pool.submit(enqueue, result["events"])
            filed += len(result["filed"])
            skipped += len(result["skipped"])
            refused.extend(result["refused"])
            claims += sum(1 for e in result["events"] if e["benefit"] is not None)
            if (start // batch) % 20 == 19:
                log(f"  {start + len(chunk)} of {len(items)} applications "
                    f"({time.monotonic() - started:.0f} s)")
        if pending is not None:
            collect(pending)
    timings["import"] = round(import_seconds, 1)
    timings["enqueue"] = round(queue_seconds, 1)  # side by side with the import
    clock = time.monotonic()

    verified = {"approved": 0, "refused": 0}
    if verify_benefits:
        # a department officer has decided the claims filed more than 30 days ago (also those
        # of an earlier, interrupted load of this part)
        decisions = []
        for number, ref in _undecided(engine, source, prefix, cutoff):
            approved = random.Random(f"{seed}:{scale}:{ref}:benefit").random() < 0.9
            decisions.append({"application_number": number, "approved": approved,
                              "note": None if approved else
                              "Құжат расталмады / документ не подтверждён"})
        decided = _retrying(log, app_commands.verify_benefits_bulk, apps_db, decisions,
                            OFFICER)
        _retrying(log, queue_commands.benefits_verified_bulk, queue_db, decided["verified"])
        verified["approved"] = sum(1 for d in decided["verified"] if d["approved"])
        verified["refused"] = sum(1 for d in decided["verified"] if not d["approved"])
        refused.extend(decided["refused"])
    lap("benefits")

    summary["registry_rows_projected"] = (_retrying(log, project_registry, config)
                                          if project else 0)
    lap("registry")

    # fresh statistics and visibility maps: the queue number is an index-only count
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("applications.applications", "applications.preferences",
                      "queue.entries", "queue.candidates", "registry.queue_entries"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    lap("vacuum")
    timings["total"] = round(time.monotonic() - started, 1)
    summary.update({
        "loaded": filed > 0, "applications": filed, "skipped": skipped, "enqueued": enqueued,
        "benefit_claims": claims, "benefits_approved": verified["approved"],
        "benefits_refused": verified["refused"], "refused": len(refused),
        "refusals": refused[:5], "seconds": timings})
    return summary


def sample_requests(config: dict, scale: str, seed: int, count: int, part: int = 3
                    ) -> list[dict[str, Any]]:
    """``count`` new application requests (api.md shape) for the loaded demo region, for
    children who have none yet (IINs and phones of load ``part``, so use a part the region
    was not loaded with): what benchmarks file through ``file_application``."""
    from services.common.config import settings
    from services.common.db import DatabaseAccess, get_engine
    from services.registry.domain import RegistrySettings

    engine = get_engine(config["DB_URL"])
    registry = DatabaseAccess(engine, "registry")
    today = local_today(engine)
    orgs = organizations(random.Random(f"{seed}:{scale}:organizations"), scale, today.year)
    views = {org_key(v): v for v in registry_views(
        registry, RegistrySettings.from_settings(settings(config)))}
    ids = []
    for org in orgs:
        view = views[org_key(org["organization"])]
        names = {g["name"]: g["id"] for g in view["groups"]}
        for g in org["groups"]:
            g["id"] = names[g["name"]]
        ids.append(view["id"])
    regions = districts(scale)
    rng = random.Random(f"{seed}:{scale}:{part}:sample")
    items = skeletons(rng, count, regions, today, {})
    records = build_records(rng, items, regions, Fitting(orgs, ids), Families(part), today,
                            "sample", part)
    return [r["application"] for r in records]
