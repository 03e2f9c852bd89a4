"""Texts of the parent's event feed (05-5), in Kazakh and Russian. Pure: no I/O.

:func:`render` returns ``{"kk": ..., "ru": ...}`` for a feed entry kind. Times are shown in the
portal's local time zone (settings ``TIMEZONE``, Asia/Almaty).
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Almaty"

TEMPLATES: dict[str, dict[str, str]] = {
    "filed": {
        "kk": "№{number} өтініш қабылданды. Кезек: {queue_name}.",
        "ru": "Заявление №{number} принято. Очередь: {queue_name}.",
    },
    "benefit_verified": {
        "kk": "№{number} өтініш бойынша жеңілдік расталды: {category_kk}.",
        "ru": "Льгота по заявлению №{number} подтверждена: {category_ru}.",
    },
    "benefit_refused": {
        "kk": "№{number} өтініш бойынша жеңілдік расталмады: {category_kk}.{note_kk}",
        "ru": "Льгота по заявлению №{number} не подтверждена: {category_ru}.{note_ru}",
    },
    "offered": {
        "kk": "№{number} өтініш бойынша №{direction} жолдама берілді{organization_kk}. "
              "Жолдама {expires} дейін жарамды.",
        "ru": "По заявлению №{number} выдано направление №{direction}{organization_ru}. "
              "Направление действительно до {expires}.",
    },
    "stop_listed": {
        "kk": "№{number} өтініш стоп-параққа енгізілді. Себебі: {reason_kk}.{until_kk}",
        "ru": "Заявление №{number} внесено в стоп-лист. Причина: {reason_ru}.{until_ru}",
    },
    "back_in_queue": {
        "kk": "№{number} өтініш кезекке қайтарылды, кезектегі орны сақталды.",
        "ru": "Заявление №{number} возвращено в очередь с сохранением места.",
    },
    "provided": {
        "kk": "№{number} өтініш бойынша бала мектепке дейінгі ұйымға қабылданды.",
        "ru": "По заявлению №{number} ребёнок зачислен в дошкольную организацию.",
    },
    "withdrawn": {
        "kk": "№{number} өтініш кері қайтарып алынды.",
        "ru": "Заявление №{number} отозвано.",
    },
}

# stop-list reasons (05-22.11) as the queue service names them
STOP_REASONS: dict[str, dict[str, str]] = {
    "postponed": {"kk": "өтініш берушінің өтініші бойынша кейінге қалдырылды",
                  "ru": "отложено по просьбе заявителя"},
    "direction_declined": {"kk": "жолдамадан бас тартылды",
                           "ru": "отказ от направления"},
    "direction_expired": {"kk": "жолдама мерзімінде пайдаланылмады",
                          "ru": "направление не использовано в срок"},
    "direction_revoked": {"kk": "жолдама кері қайтарылды",
                          "ru": "направление отозвано"},
    "documents_check": {"kk": "құжаттар тексерілуде",
                        "ru": "документы на проверке"},
}


def local_time(value: Any, tz: str = DEFAULT_TZ, with_time: bool = True) -> str:
    """An ISO time (or datetime) as local ``dd.mm.yyyy HH:MM``; '' for None."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if "T" in value or " " in value \
            else dt.date.fromisoformat(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(ZoneInfo(tz))
        return value.strftime("%d.%m.%Y %H:%M" if with_time else "%d.%m.%Y")
    return value.strftime("%d.%m.%Y")


def render(kind: str, tz: str = DEFAULT_TZ, **params: Any) -> dict[str, str]:
    """The kk and ru text of a feed entry of ``kind`` (a key of TEMPLATES)."""
    p = {k: ("" if v is None else v) for k, v in params.items()}
    if kind == "benefit_refused":
        note = (params.get("note") or "").strip()
        p["note_kk"] = f" Ескерту: {note}" if note else ""
        p["note_ru"] = f" Примечание: {note}" if note else ""
    if kind == "offered":
        p["expires"] = local_time(params.get("expires_at"), tz)
        name = params.get("organization_name")
        p["organization_kk"] = f" («{name}»)" if name else ""
        p["organization_ru"] = f" («{name}»)" if name else ""
    if kind == "stop_listed":
        reason = params.get("reason")
        names = STOP_REASONS.get(reason or "", {"kk": reason or "—", "ru": reason or "—"})
        p["reason_kk"], p["reason_ru"] = names["kk"], names["ru"]
        until = local_time(params.get("exits_at"), tz, with_time=False)
        p["until_kk"] = f" Стоп-парақтан шығу күні: {until}." if until else ""
        p["until_ru"] = f" Дата выхода из стоп-листа: {until}." if until else ""
    templates = TEMPLATES[kind]
    return {lang: template.format(**p) for lang, template in templates.items()}
