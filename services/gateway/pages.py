"""The web pages: server-rendered HTML in Kazakh and Russian, no build step.

Pure functions from plain data (what the registry's RPC methods return) to HTML strings; the
entrypoints that call them are in web.py. Every value that did not come from this file goes
through :func:`esc` (``h()`` does it for its children and attributes), so user-supplied text
(names, addresses, query parameters) is always escaped.

Public registries are rendered here in full. The signed-in pages (a parent's applications,
staff, officer, auditor) are rendered as forms and empty containers with every label in the
page's language; static/kezek.js fills them from the JSON API with the bearer token kept in
the browser (localStorage), so no page ever reads a credential from a cookie. The same script
computes the device fingerprint, sends it as X-Device-Fingerprint on every API call and keeps it
in the ``kezek_fp`` cookie, which the gateway reads for page requests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

LANGS = ("kk", "ru")
DEFAULT_LANG = "kk"
LANG_COOKIE = "kezek_lang"
FINGERPRINT_COOKIE = "kezek_fp"
LOCAL_TZ = ZoneInfo("Asia/Almaty")
STATIC_DIR = Path(__file__).resolve().parent / "static"
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

# Content-Security-Policy of every page: scripts and styles only from this origin, no inline
# script (the label dictionary is a JSON data block, which is never executed).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

# -- labels: key -> (kk, ru) ----------------------------------------------------------------------
LABELS: dict[str, tuple[str, str]] = {
    "site.name": ("Kezek", "Kezek"),
    "site.tagline": ("Балабақшаға электрондық кезек", "Электронная очередь в детский сад"),
    "lang.kk": ("Қазақша", "Қазақша"),
    "lang.ru": ("Русский", "Русский"),
    # navigation and page titles
    "nav.menu": ("Мәзір", "Меню"),
    "nav.home": ("Басты бет", "Главная"),
    "nav.organizations": ("Ұйымдар", "Организации"),
    "nav.queue": ("Кезек", "Очередь"),
    "nav.lookup": ("Кезектегі нөмір", "Номер в очереди"),
    "nav.vacancies": ("Бос орындар", "Свободные места"),
    "nav.releases": ("Орындардың босатылуы", "Высвобождение мест"),
    "nav.directions": ("Жолдамалар", "Направления"),
    "nav.statistics": ("Статистика", "Статистика"),
    "nav.sign_in": ("Кіру", "Войти"),
    "nav.sign_out": ("Шығу", "Выйти"),
    "nav.apply": ("Өтініш беру", "Подать заявление"),
    "nav.me": ("Менің өтініштерім", "Мои заявления"),
    "nav.feed": ("Хабарламалар", "Уведомления"),
    "nav.staff": ("Менің ұйымым", "Моя организация"),
    "nav.officer": ("Білім бөлімі", "Отдел образования"),
    "nav.audit": ("Аудит журналы", "Журнал аудита"),
    "title.organization": ("Ұйым", "Организация"),
    "title.error": ("Қате", "Ошибка"),
    "home.intro": (
        "Мектепке дейінгі ұйымға кезекке тұру, кезектегі нөміріңізді білу және ашық "
        "тізілімдерді қарау.",
        "Постановка в очередь в дошкольную организацию, проверка номера в очереди и открытые "
        "реестры.",
    ),
    "home.registries": ("Ашық тізілімдер", "Открытые реестры"),
    "home.parents": ("Ата-аналарға", "Родителям"),
    # fields
    "f.application_number": ("Өтініш нөмірі", "Номер заявления"),
    "f.queue_number": ("Кезектегі нөмірі", "Номер в очереди"),
    "f.queue_name": ("Кезек", "Очередь"),
    "f.applicant_name": ("Өтініш беруші", "Заявитель"),
    "f.child_name": ("Бала", "Ребёнок"),
    "f.filed_at": ("Берілген уақыты", "Дата подачи"),
    "f.status": ("Мәртебесі", "Статус"),
    "f.queue_type": ("Кезек түрі", "Тип очереди"),
    "f.benefit_tier": ("Жеңілдік", "Льгота"),
    "f.stop_list": ("Стоп-парақ", "Стоп-лист"),
    "f.district": ("Аудан", "Район"),
    "f.language": ("Тілі", "Язык"),
    "f.languages": ("Тілдері", "Языки"),
    "f.birth_year": ("Туған жылы", "Год рождения"),
    "f.ownership": ("Меншік нысаны", "Форма собственности"),
    "f.kind": ("Түрі", "Вид"),
    "f.address": ("Мекенжайы", "Адрес"),
    "f.name": ("Атауы", "Наименование"),
    "f.groups": ("Топтар", "Группы"),
    "f.groups_count": ("Топтар саны", "Групп"),
    "f.group": ("Топ", "Группа"),
    "f.group_type": ("Топ түрі", "Тип группы"),
    "f.capacity": ("Орын саны", "Мест"),
    "f.enrolled": ("Қабылданғандар", "Зачислено"),
    "f.vacancies": ("Бос орындар", "Свободных мест"),
    "f.monthly_fee_kzt": ("Ай сайынғы төлем, ₸", "Оплата в месяц, ₸"),
    "f.place_id": ("Орын", "Место"),
    "f.in_priority_period": ("Басымдық кезеңі", "Приоритетный период"),
    "f.priority_ends_at": ("Басымдық кезеңінің соңы", "Конец приоритетного периода"),
    "f.released_at": ("Босатылған уақыты", "Дата высвобождения"),
    "f.direction": ("Жолдама", "Направление"),
    "f.direction_number": ("Жолдама нөмірі", "Номер направления"),
    "f.issued_at": ("Берілген уақыты", "Дата выдачи"),
    "f.expires_at": ("Жарамдылық мерзімі", "Действует до"),
    "f.direction_type": ("Жолдама түрі", "Тип направления"),
    "f.organization": ("Ұйым", "Организация"),
    "f.organization_id": ("Ұйым ID", "ID организации"),
    "f.has_vacancies": ("Бос орны барлар ғана", "Только со свободными местами"),
    "f.from": ("Бастап", "С"),
    "f.to": ("Дейін", "По"),
    "f.phone": ("Телефон нөмірі", "Номер телефона"),
    "f.code": ("SMS-тегі код", "Код из SMS"),
    "f.iin": ("ЖСН", "ИИН"),
    "f.full_name": ("Тегі, аты, әкесінің аты", "Фамилия, имя, отчество"),
    "f.birth_date": ("Туған күні", "Дата рождения"),
    "f.preferred": ("Таңдалған ұйымдар (3-ке дейін)", "Выбранные организации (до 3)"),
    "f.desired_start": ("Қалаған қабылдау күні", "Желаемая дата зачисления"),
    "f.benefit": ("Жеңілдік санаты", "Категория льготы"),
    "f.benefit_document": ("Растайтын құжат", "Подтверждающий документ"),
    "f.until": ("Қай күнге дейін", "До какой даты"),
    "f.places": ("Орын саны", "Количество мест"),
    "f.note": ("Ескерту", "Примечание"),
    "f.reason": ("Себебі", "Причина"),
    "f.actor": ("Кім", "Кто"),
    "f.role": ("Рөлі", "Роль"),
    "f.action": ("Әрекет", "Действие"),
    "f.target": ("Объект", "Объект"),
    "f.outcome": ("Нәтиже", "Результат"),
    "f.ip": ("IP-мекенжайы", "IP-адрес"),
    "f.fingerprint": ("Құрылғы ізі", "Отпечаток устройства"),
    "f.at": ("Уақыты", "Время"),
    "f.user_agent": ("Браузер", "Браузер"),
    "f.request_id": ("Сұрау ID", "ID запроса"),
    "f.hash": ("Хеш", "Хеш"),
    "f.records": ("Жазбалар саны", "Записей"),
    "f.head": ("Тізбектің соңғы хеші", "Последний хеш цепочки"),
    "f.benefit_status": ("Жеңілдік мәртебесі", "Статус льготы"),
    "f.applicant": ("Өтініш беруші", "Заявитель"),
    "f.child": ("Бала", "Ребёнок"),
    # enumerations
    "ownership.state": ("Мемлекеттік", "Государственная"),
    "ownership.private": ("Жеке меншік", "Частная"),
    "kind.kindergarten": ("Балабақша", "Детский сад"),
    "kind.nursery": ("Бөбекжай", "Ясли"),
    "kind.mini_center": ("Шағын орталық", "Мини-центр"),
    "kind.sanatorium": ("Санаторлық балабақша", "Санаторный детский сад"),
    "kind.special": ("Арнаулы балабақша", "Специальный детский сад"),
    "group_type.general": ("Жалпы", "Общая"),
    "group_type.special": ("Арнаулы", "Специальная"),
    "group_type.sanatorium": ("Санаторлық", "Санаторная"),
    "group_type.short_stay": ("Қысқа мерзімді болу", "Кратковременного пребывания"),
    "queue_type.general": ("Жалпы", "Общая"),
    "queue_type.transfer": ("Ауысу", "Перевод"),
    "queue_type.special": ("Арнаулы", "Специальная"),
    "queue_type.sanatorium": ("Санаторлық", "Санаторная"),
    "status.queued": ("Кезекте", "В очереди"),
    "status.offered": ("Жолдама ұсынылды", "Предложено направление"),
    "status.provided": ("Орынмен қамтылды", "Обеспечен местом"),
    "status.stop_listed": ("Стоп-парақта", "В стоп-листе"),
    "status.withdrawn": ("Кері қайтарылды", "Отозвано"),
    "dstatus.issued": ("Берілді", "Выдано"),
    "dstatus.enrolled": ("Қабылданды", "Зачислен"),
    "dstatus.declined": ("Бас тартылды", "Отказ"),
    "dstatus.expired": ("Мерзімі өтті", "Срок истёк"),
    "dstatus.revoked": ("Кері қайтарып алынды", "Отозвано"),
    "dtype.priority": ("Басымдық кезеңінде", "В приоритетный период"),
    "dtype.vacancy": ("Бос орынға", "На свободное место"),
    "dtype.transfer": ("Ауысу", "Перевод"),
    "tier.out_of_turn": ("Кезектен тыс", "Внеочередное"),
    "tier.first_priority": ("Бірінші кезекте", "Первоочередное"),
    "tier.none": ("Жоқ", "Нет"),
    "language.kk": ("Қазақ тілі", "Казахский"),
    "language.ru": ("Орыс тілі", "Русский"),
    "reason.postponed": ("Өтініш берушінің сұрауымен", "По просьбе заявителя"),
    "reason.direction_declined": ("Жолдамадан бас тартылды", "Отказ от направления"),
    "reason.direction_expired": ("Жолдаманың мерзімі өтті", "Истёк срок направления"),
    "reason.direction_revoked": ("Жолдама кері қайтарылды", "Направление отозвано"),
    "reason.documents_check": ("Құжаттарды тексеру", "Проверка документов"),
    "role.public": ("Қонақ", "Гость"),
    "role.applicant": ("Ата-ана", "Родитель"),
    "role.staff": ("Ұйым қызметкері", "Сотрудник организации"),
    "role.officer": ("Білім бөлімінің маманы", "Специалист отдела образования"),
    "role.auditor": ("Аудитор", "Аудитор"),
    "role.operator": ("Оператор", "Оператор"),
    "role.system": ("Жүйе", "Система"),
    "benefit.claimed": ("Тексерілуде", "На проверке"),
    "benefit.approved": ("Расталды", "Подтверждена"),
    "benefit.refused": ("Расталмады", "Не подтверждена"),
    "yes": ("Иә", "Да"),
    "no": ("Жоқ", "Нет"),
    # actions
    "a.search": ("Іздеу", "Найти"),
    "a.any": ("Барлығы", "Все"),
    "a.prev": ("← Алдыңғы", "← Назад"),
    "a.next": ("Келесі →", "Далее →"),
    "a.send_code": ("Код алу", "Получить код"),
    "a.confirm": ("Растау", "Подтвердить"),
    "a.submit_application": ("Өтініш беру", "Подать заявление"),
    "a.withdraw": ("Өтінішті кері қайтару", "Отозвать заявление"),
    "a.postpone": ("Кейінге қалдыру", "Отложить"),
    "a.resume": ("Кезекке қайту", "Вернуться в очередь"),
    "a.decline": ("Жолдамадан бас тарту", "Отказаться от направления"),
    "a.claim": ("Осы орынға өтініш беру", "Претендовать на место"),
    "a.release": ("Орындарды босату", "Высвободить места"),
    "a.enroll": ("Қабылдау", "Зачислить"),
    "a.open": ("Ашу", "Открыть"),
    "a.approve": ("Жеңілдікті растау", "Подтвердить льготу"),
    "a.refuse": ("Жеңілдіктен бас тарту", "Отказать в льготе"),
    "a.stop_list_enter": ("Стоп-параққа қою", "Поставить в стоп-лист"),
    "a.stop_list_exit": ("Стоп-парақтан шығару", "Снять со стоп-листа"),
    "a.create_organization": ("Ұйымды қосу", "Добавить организацию"),
    "a.add_group": ("Топ қосу", "Добавить группу"),
    "a.verify_chain": ("Хеш-тізбекті тексеру", "Проверить хеш-цепочку"),
    "a.export_csv": ("CSV жүктеу", "Выгрузить CSV"),
    # messages
    "m.total": ("Барлығы", "Всего"),
    "m.page": ("Бет", "Страница"),
    "m.nothing": ("Ештеңе табылмады.", "Ничего не найдено."),
    "m.loading": ("Жүктелуде…", "Загрузка…"),
    "m.code_sent": (
        "Код SMS арқылы жіберілді. Оны төменге енгізіңіз.",
        "Код отправлен по SMS. Введите его ниже.",
    ),
    "m.signed_in_as": ("Сіз кірдіңіз:", "Вы вошли как:"),
    "m.need_sign_in": ("Бұл бетті ашу үшін кіріңіз.", "Чтобы открыть эту страницу, войдите."),
    "m.wrong_role": (
        "Бұл бет сіздің рөліңізге арналмаған.",
        "Эта страница не для вашей роли.",
    ),
    "m.filed": ("Өтініш қабылданды", "Заявление принято"),
    "m.done": ("Дайын", "Готово"),
    "m.no_applications": ("Сізде әлі өтініш жоқ.", "У вас пока нет заявлений."),
    "m.no_feed": ("Хабарламалар жоқ.", "Уведомлений нет."),
    "m.confirm_withdraw": (
        "Өтінішті кері қайтару түпкілікті. Жалғастырасыз ба?",
        "Отзыв заявления окончателен. Продолжить?",
    ),
    "m.confirm_decline": (
        "Жолдамадан бас тартасыз ба? Өтініш стоп-параққа түседі.",
        "Отказаться от направления? Заявление попадёт в стоп-лист.",
    ),
    "m.lookup_help": (
        "Өтініш нөмірін енгізіңіз, мысалы A000000123.",
        "Введите номер заявления, например A000000123.",
    ),
    "m.lookup_not_found": (
        "Мұндай нөмірмен өтініш табылмады.",
        "Заявление с таким номером не найдено.",
    ),
    "m.suppressed": ("5-тен аз (жасырылған)", "меньше 5 (скрыто)"),
    "m.released": ("Босатылған орындар", "Высвобожденные места"),
    "m.claim_with": ("Қай өтініш бойынша", "По какому заявлению"),
    "m.claim_pooled": (
        "Өтінім қабылданды: орын үміткерлердің ішінде кезегі бірінші тұрғанға беріледі.",
        "Заявка принята: место получит претендент, стоящий в очереди выше всех.",
    ),
    "m.claim_issued": ("Жолдама берілді", "Направление выдано"),
    "m.chain_ok": ("Хеш-тізбек бүтін", "Хеш-цепочка цела"),
    "m.chain_broken": ("Хеш-тізбек бұзылған", "Хеш-цепочка нарушена"),
    "m.chain_problem": ("Мәселе", "Проблема"),
    "m.choose_district": ("Алдымен ауданды таңдаңыз.", "Сначала выберите район."),
    "m.no_organizations": (
        "Бұл ауданда осы тілдегі ұйым жоқ.",
        "В этом районе нет организаций с этим языком.",
    ),
    "m.too_many_preferred": ("3-тен артық емес.", "Не больше трёх."),
    "m.no_benefit": ("Жеңілдік жоқ", "Без льготы"),
    "m.direction_issued_to_you": (
        "Сізге жолдама берілді. Мерзімі өткенше балабақшаға барыңыз.",
        "Вам выдано направление. Обратитесь в детский сад до окончания срока.",
    ),
    "m.benefits_intro": (
        "Өтініш нөмірін енгізіп, жеңілдікті растайтын құжатты тексеріңіз.",
        "Введите номер заявления и проверьте документ, подтверждающий льготу.",
    ),
    "m.no_benefit_claim": ("Бұл өтініште жеңілдік жоқ.", "В этом заявлении нет льготы."),
    "m.audit_intro": (
        "Іздеу шарттарын енгізіңіз; бос өрістер ескерілмейді.",
        "Задайте условия поиска; пустые поля не учитываются.",
    ),
    "m.error": ("Қате", "Ошибка"),
    "m.request_id": ("Сұрау", "Запрос"),
    "m.statistics_note": (
        "5 баладан аз көрсеткіштер дербес деректерді қорғау үшін жасырылған.",
        "Показатели меньше 5 детей скрыты для защиты персональных данных.",
    ),
    "m.back_home": ("Басты бетке", "На главную"),
    # statistics sections
    "s.queues": ("Кезектер", "Очереди"),
    "s.flows": ("Өтініштер ағыны", "Поток заявлений"),
    "s.allocations": ("Жолдамалар", "Направления"),
    "s.organizations": ("Ұйымдар", "Организации"),
    "s.users": ("Пайдаланушылар", "Пользователи"),
    "s.departments": ("Білім бөлімдері", "Отделы образования"),
    "s.infrastructure": ("Жүйе", "Инфраструктура"),
    # statistics columns
    "st.day": ("Күн", "День"),
    "st.children": ("Балалар", "Детей"),
    "st.with_benefit": ("Жеңілдігі барлар", "С льготой"),
    "st.filed": ("Берілді", "Подано"),
    "st.withdrawn": ("Кері қайтарылды", "Отозвано"),
    "st.provided": ("Орынмен қамтылды", "Обеспечено местом"),
    "st.direction_type": ("Жолдама түрі", "Тип направления"),
    "st.issued": ("Берілді", "Выдано"),
    "st.enrolled": ("Қабылданды", "Зачислено"),
    "st.declined": ("Бас тартылды", "Отказов"),
    "st.expired": ("Мерзімі өтті", "Истекло"),
    "st.revoked": ("Кері қайтарылды", "Отозвано"),
    "st.organization_id": ("Ұйым ID", "ID организации"),
    "st.organization_name": ("Ұйым", "Организация"),
    "st.releases": ("Босатылған орындар", "Высвобождено мест"),
    "st.enrolments": ("Қабылданғандар", "Зачислений"),
    "st.applications_filed": ("Берілген өтініштер", "Подано заявлений"),
    "st.applications_withdrawn": ("Кері қайтарылған өтініштер", "Отозвано заявлений"),
    "st.directions_declined": ("Жолдамадан бас тарту", "Отказов от направлений"),
    "st.benefits_granted": ("Расталған жеңілдіктер", "Подтверждено льгот"),
    "st.stop_listed": ("Стоп-параққа қойылды", "Поставлено в стоп-лист"),
    "st.directions_revoked": ("Кері қайтарылған жолдамалар", "Отозвано направлений"),
    "st.master_data_changes": ("Анықтамалық өзгерістері", "Изменений справочников"),
    "st.source": ("Қызмет", "Сервис"),
    "st.event_type": ("Оқиға", "Событие"),
    "st.events": ("Оқиғалар", "Событий"),
    # error codes shown by the script (the API's message is shown for any other code)
    "e.OTP_INVALID": ("Код қате.", "Неверный код."),
    "e.OTP_EXPIRED": ("Кодтың мерзімі өтті; жаңасын алыңыз.", "Срок кода истёк; получите новый."),
    "e.OTP_USED": ("Бұл код пайдаланылған; жаңасын алыңыз.", "Код уже использован; получите новый."),
    "e.OTP_ATTEMPTS_EXCEEDED": (
        "Қате код тым көп енгізілді; жаңасын алыңыз.",
        "Слишком много неверных попыток; получите новый код.",
    ),
    "e.OTP_RATE_LIMITED": (
        "Бұл нөмірге тым көп код жіберілді; кейінірек көріңіз.",
        "Слишком много кодов на этот номер; попробуйте позже.",
    ),
    "e.RATE_LIMITED": (
        "Сұраулар тым жиі; біраз күтіңіз.",
        "Слишком частые запросы; подождите немного.",
    ),
    "e.TEMPORARILY_BLOCKED": ("Уақытша бұғатталды.", "Временно заблокировано."),
    "e.INVALID_TOKEN": ("Қайта кіріңіз.", "Войдите заново."),
    "e.TOKEN_EXPIRED": ("Сессия аяқталды; қайта кіріңіз.", "Сессия истекла; войдите заново."),
    "e.ROLE_REFUSED": ("Бұл әрекет сіздің рөліңізге рұқсат етілмеген.", "Действие не разрешено."),
    "e.IIN_INVALID": ("ЖСН қате.", "Неверный ИИН."),
    "e.DUPLICATE_APPLICATION": (
        "Бұл балаға өтініш бұрын берілген.",
        "На этого ребёнка заявление уже подано.",
    ),
    "e.NO_FREE_CAPACITY": ("Топта бос орын жоқ.", "В группе нет свободной ёмкости."),
    "e.ALREADY_WITHDRAWN": ("Өтініш бұрын кері қайтарылған.", "Заявление уже отозвано."),
    "e.NOT_FOUND": ("Табылмады.", "Не найдено."),
    "e.APPLICATION_NOT_FOUND": ("Өтініш табылмады.", "Заявление не найдено."),
    "e.NETWORK": ("Сервер жауап бермеді.", "Сервер не ответил."),
    "e.NO_SUCH_PATH": ("Мұндай бет жоқ.", "Такой страницы нет."),
    "e.INVALID_PARAMETER": ("Сілтемедегі мән қате.", "Неверное значение в ссылке."),
    "e.DOES_NOT_FIT": (
        "Бала бұл орынға сәйкес келмейді.",
        "Ребёнок не подходит для этого места.",
    ),
    "e.AUDIT_UNAVAILABLE": (
        "Әрекеттер журналы уақытша қолжетімсіз; кейінірек қайталаңыз.",
        "Журнал действий временно недоступен; повторите позже.",
    ),
    "e.UPSTREAM_UNAVAILABLE": (
        "Қызмет уақытша қолжетімсіз; кейінірек қайталаңыз.",
        "Сервис временно недоступен; повторите позже.",
    ),
    "e.UPSTREAM_TIMEOUT": (
        "Қызмет уақытында жауап бермеді; қайталаңыз.",
        "Сервис не ответил вовремя; повторите.",
    ),
    "e.UPSTREAM_ERROR": ("Қызметте қате болды.", "В сервисе произошла ошибка."),
    "e.DATABASE_UNAVAILABLE": (
        "Дерекқор уақытша қолжетімсіз.",
        "База данных временно недоступна.",
    ),
}

ENUM_PREFIX = {
    "ownership": "ownership",
    "kind": "kind",
    "group_type": "group_type",
    "queue_type": "queue_type",
    "status": "status",
    "benefit_tier": "tier",
    "language": "language",
    "direction_status": "dstatus",
    "direction_type": "dtype",
    "reason": "reason",
    "role": "role",
}


def label(key: str, lang: str) -> str:
    pair = LABELS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "ru" else pair[0]


def enum_label(kind: str, value: Any, lang: str) -> str:
    """The label of an enumeration value ('ownership', 'state'); the value itself if unknown."""
    if value is None or value == "":
        return ""
    key = f"{ENUM_PREFIX.get(kind, kind)}.{value}"
    return label(key, lang) if key in LABELS else str(value)


def labels_for(lang: str) -> dict[str, str]:
    """The whole dictionary in one language (for the script)."""
    return {key: label(key, lang) for key in LABELS}


def choose_lang(args: Mapping[str, str], cookies: Mapping[str, str]) -> tuple[str, bool]:
    """(language, whether to remember it in the cookie): ?lang= first, then the cookie,
    then Kazakh."""
    asked = args.get("lang")
    if asked in LANGS:
        return asked, cookies.get(LANG_COOKIE) != asked
    if cookies.get(LANG_COOKIE) in LANGS:
        return cookies[LANG_COOKIE], False
    return DEFAULT_LANG, False


# -- escaping and building HTML -----------------------------------------------------------------
class Safe(str):
    """Text that is already HTML (built here); anything else is escaped when inserted."""


def esc(value: Any) -> Safe:
    if isinstance(value, Safe):
        return value
    if value is None:
        return Safe("")
    return Safe(html.escape(str(value), quote=True))


VOID = {"input", "meta", "link", "br", "img", "hr"}


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if isinstance(child, (list, tuple)):
            yield from _flatten(child)
        elif child is not None and child is not False:
            yield child


def h(tag: str, *children: Any, **attrs: Any) -> Safe:
    """``h("a", "text", href="/x", class_="btn", data_role="applicant")`` -> escaped HTML.
    Attributes: a trailing underscore is dropped, other underscores become dashes; True gives a
    bare attribute, None and False leave it out."""
    parts = [tag]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        if value is True:
            parts.append(name)
        else:
            parts.append(f'{name}="{esc(value)}"')
    opening = "<" + " ".join(parts) + ">"
    if tag in VOID:
        return Safe(opening)
    inner = "".join(esc(c) for c in _flatten(children))
    return Safe(f"{opening}{inner}</{tag}>")


def join(*parts: Any) -> Safe:
    return Safe("".join(esc(p) for p in _flatten(parts)))


# -- formatting ---------------------------------------------------------------------------------
def local_time(value: Any, with_time: bool = True) -> str:
    """An ISO time from a service shown in Almaty time: '2027-01-15 09:30'."""
    if not value:
        return ""
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")
    moment = moment.astimezone(LOCAL_TZ)
    return moment.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")


def yes_no(value: Any, lang: str) -> str:
    return label("yes" if value else "no", lang)


def stop_list_text(stop: Any, lang: str) -> str:
    if not isinstance(stop, dict):
        return ""
    text = enum_label("reason", stop.get("reason"), lang)
    if stop.get("exits_at"):
        text += f" ({label('f.until', lang).lower()} {local_time(stop['exits_at'], False)})"
    return text


def cell(value: Any, lang: str) -> Any:
    """A statistics figure: a count, or 'fewer than 5' when suppressed."""
    if isinstance(value, dict) and "suppressed" in value:
        return label("m.suppressed", lang) if value.get("suppressed") else value.get("count")
    return value


# -- static files -------------------------------------------------------------------------------
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}


@lru_cache(maxsize=None)
def static_file(name: str) -> tuple[bytes, str, str] | None:
    """(content, content type, etag) of a file in static/, or None. Only plain names."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    path = STATIC_DIR / name
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None or not path.is_file():
        return None
    data = path.read_bytes()
    return data, kind, hashlib.sha256(data).hexdigest()[:16]


def asset_url(name: str) -> str:
    found = static_file(name)
    return f"/static/{name}" + (f"?v={found[2]}" if found else "")


# -- the layout ---------------------------------------------------------------------------------
PUBLIC_NAV = (
    ("/", "nav.home"),
    ("/queue/lookup", "nav.lookup"),
    ("/organizations", "nav.organizations"),
    ("/queue", "nav.queue"),
    ("/vacancies", "nav.vacancies"),
    ("/releases", "nav.releases"),
    ("/directions", "nav.directions"),
    ("/statistics", "nav.statistics"),
)
ROLE_NAV = (
    ("/apply", "nav.apply", "applicant"),
    ("/me", "nav.me", "applicant"),
    ("/me/feed", "nav.feed", "applicant"),
    ("/staff", "nav.staff", "staff"),
    ("/officer", "nav.officer", "officer"),
    ("/audit", "nav.audit", "auditor"),
)


@lru_cache(maxsize=1)
def _layout_template():
    from string import Template

    return Template((TEMPLATES_DIR / "layout.html").read_text(encoding="utf-8"))


class PageContext:
    """What every page needs: its language and where it is (for the language switch)."""

    def __init__(self, lang: str, path: str, args: Mapping[str, str] | None = None):
        self.lang = lang
        self.path = path
        self.args = {k: v for k, v in (args or {}).items() if k != "lang"}

    def t(self, key: str) -> str:
        return label(key, self.lang)

    def e(self, kind: str, value: Any) -> str:
        return enum_label(kind, value, self.lang)

    def url(self, path: str | None = None, **args: Any) -> str:
        """A link to path (this page by default) with these query arguments (None drops)."""
        if path is None:
            merged = {**self.args, **args}
            path = self.path
        else:
            merged = dict(args)
        merged = {k: v for k, v in merged.items() if v not in (None, "")}
        return path + ("?" + urlencode(merged) if merged else "")

    def lang_url(self, lang: str) -> str:
        return self.path + "?" + urlencode({**self.args, "lang": lang})


def layout(
    ctx: PageContext,
    page: str,
    title: str,
    body: Any,
    roles: tuple[str, ...] = (),
) -> str:
    """The whole document. ``roles``: the page is for signed-in users of these roles (the
    script sends anyone else to the sign-in page)."""
    t = ctx.t
    nav = [h("a", t(key), href=path) for path, key in PUBLIC_NAV]
    nav += [
        h("a", t(key), href=path, data_role=role, hidden=True) for path, key, role in ROLE_NAV
    ]
    switch = [
        h(
            "a",
            label(f"lang.{code}", code),
            href=ctx.lang_url(code),
            lang=code,
            class_="current" if code == ctx.lang else None,
            aria_current="true" if code == ctx.lang else None,
        )
        for code in LANGS
    ]
    account = join(
        h("a", t("nav.sign_in"), href="/sign-in", id="sign-in-link"),
        h("span", "", id="who", hidden=True),
        h("button", t("nav.sign_out"), type="button", id="sign-out", hidden=True),
    )
    labels_json = json.dumps(labels_for(ctx.lang), ensure_ascii=False).replace("<", "\\u003c")
    return _layout_template().substitute(
        lang=ctx.lang,
        title=esc(f"{title} · Kezek"),
        css=esc(asset_url("kezek.css")),
        js=esc(asset_url("kezek.js")),
        page=esc(page),
        roles=esc(",".join(roles)),
        labels=Safe(labels_json),
        home=esc(t("site.name")),
        tagline=esc(t("site.tagline")),
        menu=esc(t("nav.menu")),
        nav=join(nav),
        switch=join(switch),
        account=account,
        heading=esc(title),
        body=esc(body) if not isinstance(body, Safe) else body,
    )


# -- pieces -------------------------------------------------------------------------------------
def card(title: Any, fields: Iterable[tuple[str, Any]], **attrs: Any) -> Safe:
    """A record shown as a card (readable at 360 px, unlike a wide table)."""
    rows = [
        join(h("dt", name), h("dd", value))
        for name, value in fields
        if value not in (None, "", [], ())
    ]
    return h("li", h("h3", title) if title else None, h("dl", rows), class_="card", **attrs)


def cards(items: list[Safe], ctx: PageContext) -> Safe:
    if not items:
        return h("p", ctx.t("m.nothing"), class_="empty")
    return h("ul", items, class_="cards")


def notice(text: Any, kind: str = "info", **attrs: Any) -> Safe:
    return h("p", text, class_=f"notice {kind}", role="alert" if kind == "error" else None, **attrs)


def field(label_text: str, control: Safe, hint: str | None = None) -> Safe:
    return h("label", h("span", label_text), control, h("small", hint) if hint else None)


def select(
    name: str,
    options: Iterable[tuple[Any, str]],
    value: Any = None,
    blank: str | None = None,
    **attrs: Any,
) -> Safe:
    opts = [h("option", blank, value="")] if blank is not None else []
    for key, text in options:
        opts.append(h("option", text, value=key, selected=str(key) == str(value)))
    return h("select", opts, name=name, **attrs)


def text_input(name: str, value: Any = None, type_: str = "text", **attrs: Any) -> Safe:
    return h("input", type=type_, name=name, value=value if value is not None else None, **attrs)


def enum_options(kind: str, values: Iterable[str], ctx: PageContext) -> list[tuple[str, str]]:
    return [(v, ctx.e(kind, v)) for v in values]


def pager(ctx: PageContext, result: Mapping[str, Any]) -> Safe:
    total = int(result.get("total") or 0)
    page = int(result.get("page") or 1)
    size = int(result.get("page_size") or 1) or 1
    pages = max(1, -(-total // size))
    links = []
    if page > 1:
        links.append(h("a", ctx.t("a.prev"), href=ctx.url(page=page - 1), rel="prev"))
    links.append(h("span", f"{ctx.t('m.page')} {page} / {pages} · {ctx.t('m.total')}: {total}"))
    if page < pages:
        links.append(h("a", ctx.t("a.next"), href=ctx.url(page=page + 1), rel="next"))
    return h("nav", links, class_="pager", aria_label="pages")


def filter_form(ctx: PageContext, controls: list[Safe], action: str | None = None) -> Safe:
    return h(
        "form",
        h("details", h("summary", ctx.t("a.search")), h("div", controls, class_="grid"),
          h("button", ctx.t("a.search"), type="submit"), open=bool(ctx.args) or None),
        method="get",
        action=action or ctx.path,
        class_="filters",
    )


def filter_controls(ctx: PageContext, names: Iterable[str], districts: list[str]) -> list[Safe]:
    """Form controls for the common registry filters, filled with the current values."""
    a, any_ = ctx.args, ctx.t("a.any")
    out: list[Safe] = []
    for name in names:
        if name == "district":
            out.append(field(ctx.t("f.district"), select(
                "district", [(d, d) for d in districts], a.get("district"), any_)))
        elif name == "language":
            out.append(field(ctx.t("f.language"), select(
                "language", enum_options("language", LANGS, ctx), a.get("language"), any_)))
        elif name == "birth_year":
            out.append(field(ctx.t("f.birth_year"), text_input(
                "birth_year", a.get("birth_year"), "number", min=1990, max=2100,
                inputmode="numeric")))
        elif name == "ownership":
            out.append(field(ctx.t("f.ownership"), select(
                "ownership", enum_options("ownership", ("state", "private"), ctx),
                a.get("ownership"), any_)))
        elif name == "kind":
            out.append(field(ctx.t("f.kind"), select(
                "kind", enum_options("kind", ("kindergarten", "nursery", "mini_center",
                                              "sanatorium", "special"), ctx),
                a.get("kind"), any_)))
        elif name == "group_type":
            out.append(field(ctx.t("f.group_type"), select(
                "group_type", enum_options("group_type", ("general", "special", "sanatorium",
                                                          "short_stay"), ctx),
                a.get("group_type"), any_)))
        elif name == "queue_type":
            out.append(field(ctx.t("f.queue_type"), select(
                "queue_type", enum_options("queue_type", ("general", "transfer", "special",
                                                          "sanatorium"), ctx),
                a.get("queue_type"), any_)))
        elif name == "status":
            out.append(field(ctx.t("f.status"), select(
                "status", enum_options("status", ("queued", "offered", "stop_listed",
                                                  "provided"), ctx),
                a.get("status"), any_)))
        elif name == "direction_status":
            out.append(field(ctx.t("f.status"), select(
                "status", enum_options("direction_status", ("issued", "enrolled", "declined",
                                                            "expired", "revoked"), ctx),
                a.get("status"), any_)))
        elif name == "type":
            out.append(field(ctx.t("f.direction_type"), select(
                "type", enum_options("direction_type", ("priority", "vacancy", "transfer"), ctx),
                a.get("type"), any_)))
        elif name == "has_vacancies":
            out.append(h("label", h("input", type="checkbox", name="has_vacancies",
                                    value="true", checked=a.get("has_vacancies") == "true"),
                         h("span", ctx.t("f.has_vacancies")), class_="check"))
        elif name in ("from", "to"):
            out.append(field(ctx.t(f"f.{name}"), text_input(name, a.get(name), "date")))
        elif name == "organization_id":
            out.append(field(ctx.t("f.organization_id"), text_input(
                "organization_id", a.get("organization_id"), "number", min=1,
                inputmode="numeric")))
    return out


def registry_page(
    ctx: PageContext,
    page: str,
    title_key: str,
    result: Mapping[str, Any],
    items: list[Safe],
    controls: list[Safe],
    problems: list[str],
    intro: Any = None,
    extra: Any = None,
) -> str:
    body = join(
        intro,
        [notice(p, "error") for p in problems],
        filter_form(ctx, controls),
        extra,
        cards(items, ctx),
        pager(ctx, result) if items else None,
        h("p", h("a", ctx.t("a.export_csv"), href=ctx.url(f"/api/v1/{page}", format="csv",
                                                          **{k: v for k, v in ctx.args.items()
                                                             if k not in ("page",)})),
          class_="export"),
    )
    return layout(ctx, page, ctx.t(title_key), body)


# -- public pages -------------------------------------------------------------------------------
def lookup_form(ctx: PageContext, number: str | None = None) -> Safe:
    return h(
        "form",
        field(ctx.t("f.application_number"),
              text_input("application_number", number, required=True, maxlength=64,
                         placeholder="A000000123", autocapitalize="characters",
                         pattern="[A-Za-z0-9][A-Za-z0-9_\\-]*"),
              ctx.t("m.lookup_help")),
        h("button", ctx.t("a.search"), type="submit"),
        method="get",
        action="/queue/lookup",
        class_="lookup",
    )


def home(ctx: PageContext) -> str:
    t = ctx.t
    registries = [h("li", h("a", t(key), href=path)) for path, key in PUBLIC_NAV[2:]]
    body = join(
        h("p", t("home.intro"), class_="lead"),
        h("section", h("h2", t("nav.lookup")), lookup_form(ctx)),
        h("section", h("h2", t("home.parents")),
          h("p", h("a", t("nav.apply"), href="/apply", class_="button"), " ",
            h("a", t("nav.me"), href="/me"))),
        h("section", h("h2", t("home.registries")), h("ul", registries, class_="links")),
    )
    return layout(ctx, "home", t("site.tagline"), body)


def queue_row_fields(ctx: PageContext, row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    t, e = ctx.t, ctx.e
    return [
        (t("f.application_number"), row.get("application_number")),
        (t("f.queue_name"), row.get("queue_name")),
        (t("f.child_name"), row.get("child_name")),
        (t("f.applicant_name"), row.get("applicant_name")),
        (t("f.filed_at"), local_time(row.get("filed_at"))),
        (t("f.status"), e("status", row.get("status"))),
        (t("f.queue_type"), e("queue_type", row.get("queue_type"))),
        (t("f.benefit_tier"), e("benefit_tier", row.get("benefit_tier") or "none")),
        (t("f.stop_list"), stop_list_text(row.get("stop_list"), ctx.lang)),
    ]


def lookup(
    ctx: PageContext, number: str | None, row: Mapping[str, Any] | None, problem: str | None
) -> str:
    t = ctx.t
    parts: list[Any] = [lookup_form(ctx, number)]
    if problem:
        parts.append(notice(problem, "error"))
    if row:
        queue_number = row.get("queue_number")
        parts.append(h(
            "section",
            h("p", t("f.queue_number"), class_="big-label"),
            h("p", "—" if queue_number is None else queue_number, class_="big-number",
              id="queue-number"),
            h("ul", card(None, queue_row_fields(ctx, row)), class_="cards"),
            class_="result",
        ))
    return layout(ctx, "lookup", t("nav.lookup"), join(parts))


def organizations(ctx, result, districts, problems) -> str:
    t, e = ctx.t, ctx.e
    items = [
        card(
            h("a", o.get("name"), href=f"/organizations/{o.get('id')}"),
            [
                (t("f.district"), o.get("district")),
                (t("f.address"), o.get("address")),
                (t("f.ownership"), e("ownership", o.get("ownership"))),
                (t("f.kind"), e("kind", o.get("kind"))),
                (t("f.languages"), ", ".join(e("language", x) for x in o.get("languages") or [])),
                (t("f.groups_count"), o.get("groups_count")),
                (t("f.vacancies"), o.get("vacancies")),
                (t("f.monthly_fee_kzt"), o.get("monthly_fee_kzt")),
            ],
        )
        for o in result.get("items") or []
    ]
    controls = filter_controls(
        ctx, ("district", "language", "ownership", "kind", "birth_year", "has_vacancies"),
        districts)
    return registry_page(ctx, "organizations", "nav.organizations", result, items, controls,
                         problems)


def organization(ctx: PageContext, org: Mapping[str, Any]) -> str:
    t, e = ctx.t, ctx.e
    info = card(None, [
        (t("f.district"), org.get("district")),
        (t("f.address"), org.get("address")),
        (t("f.ownership"), e("ownership", org.get("ownership"))),
        (t("f.kind"), e("kind", org.get("kind"))),
        (t("f.languages"), ", ".join(e("language", x) for x in org.get("languages") or [])),
        (t("f.monthly_fee_kzt"), org.get("monthly_fee_kzt")),
        (t("f.vacancies"), org.get("vacancies")),
    ])
    groups = [
        card(g.get("name"), [
            (t("f.group_type"), e("group_type", g.get("group_type"))),
            (t("f.birth_year"), g.get("birth_year")),
            (t("f.language"), e("language", g.get("language"))),
            (t("f.capacity"), g.get("capacity")),
            (t("f.enrolled"), g.get("enrolled")),
        ], data_group_id=g.get("id"))
        for g in org.get("groups") or []
    ]
    oid = org.get("id")
    body = join(
        h("ul", info, class_="cards"),
        h("h2", t("f.groups")),
        cards(groups, ctx),
        h("ul", h("li", h("a", t("nav.vacancies"), href=f"/vacancies?organization_id={oid}")),
          h("li", h("a", t("nav.queue"), href=f"/queue?organization_id={oid}")),
          h("li", h("a", t("nav.directions"), href=f"/directions?organization_id={oid}")),
          class_="links"),
    )
    return layout(ctx, "organization", str(org.get("name") or t("title.organization")), body)


def queue(ctx, result, districts, problems) -> str:
    items = [
        card(
            f"№ {r.get('queue_number')}" if r.get("queue_number") is not None else "—",
            queue_row_fields(ctx, r),
            data_application=r.get("application_number"),
        )
        for r in result.get("items") or []
    ]
    controls = filter_controls(
        ctx, ("district", "queue_type", "birth_year", "language", "status"), districts)
    return registry_page(ctx, "queue", "nav.queue", result, items, controls, problems)


def vacancies(ctx, result, districts, problems) -> str:
    t, e = ctx.t, ctx.e
    items = []
    for v in result.get("items") or []:
        fields = [
            (t("f.address"), v.get("address")),
            (t("f.ownership"), e("ownership", v.get("ownership"))),
            (t("f.birth_year"), v.get("birth_year")),
            (t("f.language"), e("language", v.get("language"))),
            (t("f.group_type"), e("group_type", v.get("group_type"))),
            (t("f.in_priority_period"), yes_no(v.get("in_priority_period"), ctx.lang)),
            (t("f.priority_ends_at"), local_time(v.get("priority_ends_at"))),
            (t("f.place_id"), h("code", v.get("place_id"))),
        ]
        claim = h("button", t("a.claim"), type="button", class_="claim", data_role="applicant",
                  data_place_id=v.get("place_id"), hidden=True)
        items.append(h(
            "li",
            h("h3", h("a", v.get("organization_name"),
                      href=f"/organizations/{v.get('organization_id')}")),
            h("dl", [join(h("dt", n), h("dd", x)) for n, x in fields if x not in (None, "")]),
            claim,
            class_="card",
            data_place_id=v.get("place_id"),
        ))
    controls = filter_controls(
        ctx, ("district", "birth_year", "language", "ownership", "group_type"), districts)
    claim_box = h(
        "div",
        field(t("m.claim_with"), h("select", name="application_number", id="claim-with")),
        h("p", "", id="claim-result", class_="notice", role="status", hidden=True),
        class_="claim-box",
        data_role="applicant",
        hidden=True,
    )
    return registry_page(ctx, "vacancies", "nav.vacancies", result, items, controls, problems,
                         extra=claim_box)


def releases(ctx, result, districts, problems) -> str:
    t, e = ctx.t, ctx.e
    items = [
        card(
            h("a", r.get("organization_name"), href=f"/organizations/{r.get('organization_id')}"),
            [
                (t("f.released_at"), local_time(r.get("released_at"))),
                (t("f.address"), r.get("address")),
                (t("f.ownership"), e("ownership", r.get("ownership"))),
                (t("f.group"), r.get("group_name")),
                (t("f.group_type"), e("group_type", r.get("group_type"))),
                (t("f.birth_year"), r.get("birth_year")),
                (t("f.language"), e("language", r.get("language"))),
                (t("f.priority_ends_at"), local_time(r.get("priority_ends_at"))),
            ],
        )
        for r in result.get("items") or []
    ]
    controls = filter_controls(
        ctx, ("from", "to", "district", "birth_year", "language", "ownership"), districts)
    return registry_page(ctx, "releases", "nav.releases", result, items, controls, problems)


def direction_fields(ctx: PageContext, d: Mapping[str, Any]) -> list[tuple[str, Any]]:
    t, e = ctx.t, ctx.e
    return [
        (t("f.issued_at"), local_time(d.get("issued_at"))),
        (t("f.expires_at"), local_time(d.get("expires_at"))),
        (t("f.child_name"), d.get("child_name")),
        (t("f.organization"), d.get("organization_name")),
        (t("f.birth_year"), d.get("birth_year")),
        (t("f.language"), e("language", d.get("language"))),
        (t("f.direction_type"), e("direction_type", d.get("type"))),
        (t("f.status"), e("direction_status", d.get("status"))),
    ]


def directions(ctx, result, districts, problems) -> str:
    items = [
        card(d.get("number"), direction_fields(ctx, d), data_direction=d.get("number"))
        for d in result.get("items") or []
    ]
    controls = filter_controls(
        ctx, ("from", "to", "district", "birth_year", "language", "type", "direction_status"),
        districts)
    return registry_page(ctx, "directions", "nav.directions", result, items, controls, problems)


STAT_SECTIONS = ("queues", "flows", "allocations", "organizations", "users", "departments",
                 "infrastructure")


def statistics(ctx: PageContext, result: Mapping[str, Any], districts, problems) -> str:
    t = ctx.t
    sections = []
    for name in STAT_SECTIONS:
        rows = result.get(name) or []
        if not isinstance(rows, list) or not rows:
            continue
        columns = list(dict.fromkeys(k for r in rows if isinstance(r, dict) for k in r))
        head = h("tr", [h("th", _stat_header(ctx, c)) for c in columns])
        body = [
            h("tr", [h("td", _stat_value(ctx, c, r.get(c))) for c in columns])
            for r in rows if isinstance(r, dict)
        ]
        sections.append(h("section", h("h2", t(f"s.{name}")),
                          h("div", h("table", h("thead", head), h("tbody", body)),
                            class_="scroll")))
    controls = filter_controls(
        ctx, ("from", "to", "district", "birth_year", "language", "queue_type"), districts)
    body = join(
        [notice(p, "error") for p in problems],
        filter_form(ctx, controls),
        h("p", t("m.statistics_note"), class_="hint"),
        sections or h("p", t("m.nothing"), class_="empty"),
        h("p", h("a", t("a.export_csv"), href=ctx.url("/api/v1/statistics", format="csv",
                                                      **ctx.args)), class_="export"),
    )
    return layout(ctx, "statistics", t("nav.statistics"), body)


def _stat_header(ctx: PageContext, column: str) -> str:
    for key in (f"st.{column}", f"f.{column}"):
        if key in LABELS:
            return ctx.t(key)
    return column.replace("_", " ")


def _stat_value(ctx: PageContext, column: str, value: Any) -> Any:
    if column in ("queue_type", "language", "ownership", "group_type"):
        return ctx.e(column, value)
    if column == "direction_type":
        return ctx.e("direction_type", value)
    return cell(value, ctx.lang)


# -- sign-in and the signed-in pages (filled by the script) -------------------------------------
def sign_in(ctx: PageContext) -> str:
    t = ctx.t
    body = join(
        h("form",
          field(t("f.phone"), text_input("phone", None, "tel", required=True,
                                          autocomplete="tel", placeholder="+7 701 123 45 67",
                                          inputmode="tel")),
          h("button", t("a.send_code"), type="submit"),
          id="otp-form"),
        h("form",
          notice(t("m.code_sent")),
          field(t("f.code"), text_input("code", None, "text", required=True, maxlength=6,
                                         pattern="[0-9]{6}", inputmode="numeric",
                                         autocomplete="one-time-code")),
          h("button", t("a.confirm"), type="submit"),
          id="code-form", hidden=True),
        h("p", "", id="sign-in-error", class_="notice error", role="alert", hidden=True),
    )
    return layout(ctx, "sign-in", t("nav.sign_in"), body)


def apply(ctx: PageContext, districts: list[str], categories: list[dict]) -> str:
    t = ctx.t
    lang = ctx.lang
    benefit_options = [
        (c.get("code"), (c.get("name") or {}).get(lang) or c.get("code")) for c in categories
    ]
    form = h(
        "form",
        h("fieldset", h("legend", t("f.applicant")),
          field(t("f.iin"), text_input("applicant.iin", None, required=True, maxlength=12,
                                       pattern="[0-9]{12}", inputmode="numeric")),
          field(t("f.full_name"), text_input("applicant.full_name", None, required=True,
                                             maxlength=200, autocomplete="name")),
          field(t("f.phone"), text_input("applicant.phone", None, "tel", required=True,
                                         maxlength=32, autocomplete="tel"))),
        h("fieldset", h("legend", t("f.child")),
          field(t("f.iin"), text_input("child.iin", None, required=True, maxlength=12,
                                       pattern="[0-9]{12}", inputmode="numeric")),
          field(t("f.full_name"), text_input("child.full_name", None, required=True,
                                             maxlength=200)),
          field(t("f.birth_date"), text_input("child.birth_date", None, "date", required=True))),
        h("fieldset", h("legend", t("nav.queue")),
          field(t("f.queue_type"), select(
              "queue_type", enum_options("queue_type", ("general", "transfer", "special",
                                                        "sanatorium"), ctx), "general")),
          field(t("f.language"), select("language", enum_options("language", LANGS, ctx),
                                        lang)),
          field(t("f.district"), select("district", [(d, d) for d in districts], None,
                                        "—", required=True)),
          h("div", h("span", t("f.preferred")),
            h("div", h("p", t("m.choose_district"), class_="hint"), id="preferred"),
            class_="preferred"),
          field(t("f.desired_start"), text_input("desired_start", None, "date", required=True))),
        h("fieldset", h("legend", t("f.benefit")),
          field(t("f.benefit"), select("benefit.category", benefit_options, None,
                                       t("m.no_benefit"))),
          field(t("f.benefit_document"), text_input("benefit.document", None, maxlength=500))),
        h("button", t("a.submit_application"), type="submit"),
        id="apply-form",
    )
    result = h("section", id="apply-result", class_="result", hidden=True)
    error = h("p", "", id="apply-error", class_="notice error", role="alert", hidden=True)
    return layout(ctx, "apply", t("nav.apply"), join(form, error, result), roles=("applicant",))


def my_applications(ctx: PageContext) -> str:
    t = ctx.t
    body = join(
        h("p", h("a", t("nav.apply"), href="/apply", class_="button"), " ",
          h("a", t("nav.feed"), href="/me/feed")),
        h("p", "", id="me-error", class_="notice error", role="alert", hidden=True),
        h("div", h("p", t("m.loading")), id="applications"),
    )
    return layout(ctx, "me", t("nav.me"), body, roles=("applicant",))


def feed(ctx: PageContext) -> str:
    body = join(
        h("p", "", id="feed-error", class_="notice error", role="alert", hidden=True),
        h("ol", h("li", ctx.t("m.loading")), id="feed", class_="feed"),
    )
    return layout(ctx, "feed", ctx.t("nav.feed"), body, roles=("applicant",))


def staff(ctx: PageContext) -> str:
    t = ctx.t
    body = join(
        h("p", "", id="staff-error", class_="notice error", role="alert", hidden=True),
        h("section", h("h2", t("f.groups")), h("div", h("p", t("m.loading")), id="groups")),
        h("section", h("h2", t("nav.directions")),
          h("form",
            field(t("f.direction_number"), text_input("number", None, required=True,
                                                       maxlength=64, placeholder="D000000042")),
            h("button", t("a.enroll"), type="submit"),
            id="enroll-form", class_="inline"),
          h("div", id="org-directions")),
    )
    return layout(ctx, "staff", t("nav.staff"), body, roles=("staff",))


def officer(ctx: PageContext, districts: list[str]) -> str:
    t = ctx.t
    stop_reasons = enum_options("reason", ("documents_check", "postponed", "direction_declined",
                                           "direction_expired"), ctx)
    verify = h(
        "section",
        h("h2", t("f.benefit")),
        h("p", t("m.benefits_intro"), class_="hint"),
        h("form",
          field(t("f.application_number"), text_input("number", None, required=True,
                                                      maxlength=64, placeholder="A000000123")),
          h("button", t("a.open"), type="submit"),
          id="benefit-load", class_="inline"),
        h("div", id="benefit-view"),
        h("form",
          field(t("f.note"), text_input("note", None, maxlength=1000)),
          h("div", h("button", t("a.approve"), type="submit", name="approved", value="true"),
            h("button", t("a.refuse"), type="submit", name="approved", value="false",
              class_="secondary"), class_="buttons"),
          id="benefit-form", hidden=True),
        id="benefits",
    )
    stop = h(
        "section",
        h("h2", t("f.stop_list")),
        h("form",
          field(t("f.application_number"), text_input("number", None, required=True,
                                                      maxlength=64, placeholder="A000000123")),
          field(t("f.reason"), select("reason", stop_reasons, "documents_check")),
          field(t("f.until"), text_input("until", None, "date")),
          h("div", h("button", t("a.stop_list_enter"), type="submit", name="op", value="enter"),
            h("button", t("a.stop_list_exit"), type="submit", name="op", value="exit",
              class_="secondary"), class_="buttons"),
          id="stop-form"),
        id="stop-list",
    )
    kinds = enum_options("kind", ("kindergarten", "nursery", "mini_center", "sanatorium",
                                  "special"), ctx)
    new_org = h(
        "form",
        h("h3", t("a.create_organization")),
        field(t("f.name"), text_input("name", None, required=True, maxlength=300)),
        field(t("f.address"), text_input("address", None, required=True, maxlength=500)),
        field(t("f.district"), text_input("district", None, required=True, maxlength=120,
                                          list="district-names")),
        h("datalist", [h("option", value=d) for d in districts], id="district-names"),
        field(t("f.ownership"), select("ownership", enum_options("ownership",
                                                                 ("state", "private"), ctx))),
        field(t("f.kind"), select("kind", kinds)),
        h("div", h("span", t("f.languages")),
          [h("label", h("input", type="checkbox", name="languages", value=code,
                        checked=code == ctx.lang), h("span", ctx.e("language", code)),
             class_="check") for code in LANGS],
          class_="checks"),
        field(t("f.monthly_fee_kzt"), text_input("monthly_fee_kzt", 0, "number", min=0)),
        h("button", t("a.create_organization"), type="submit"),
        id="org-form",
    )
    new_group = h(
        "form",
        h("h3", t("a.add_group")),
        field(t("f.organization_id"), text_input("organization_id", None, "number",
                                                 required=True, min=1)),
        field(t("f.name"), text_input("name", None, required=True, maxlength=200)),
        field(t("f.group_type"), select("group_type", enum_options(
            "group_type", ("general", "special", "sanatorium", "short_stay"), ctx))),
        field(t("f.birth_year"), text_input("birth_year", None, "number", required=True,
                                            min=1990, max=2100)),
        field(t("f.language"), select("language", enum_options("language", LANGS, ctx))),
        field(t("f.capacity"), text_input("capacity", 20, "number", required=True, min=1)),
        field(t("f.enrolled"), text_input("enrolled", 0, "number", min=0)),
        h("button", t("a.add_group"), type="submit"),
        id="group-form",
    )
    orgs = h("section", h("h2", t("nav.organizations")), new_org, new_group,
             h("p", h("a", t("nav.organizations"), href="/organizations")), id="organizations")
    body = join(
        h("p", "", id="officer-result", class_="notice", role="status", hidden=True),
        h("p", "", id="officer-error", class_="notice error", role="alert", hidden=True),
        verify, stop, orgs,
    )
    return layout(ctx, "officer", t("nav.officer"), body, roles=("officer",))


AUDIT_FILTERS = ("actor", "role", "action", "target", "outcome", "ip", "fingerprint")


def audit(ctx: PageContext, actions: Iterable[str] = ()) -> str:
    t = ctx.t
    roles = enum_options("role", ("public", "applicant", "staff", "officer", "auditor",
                                  "operator", "system"), ctx)
    controls = []
    for name in AUDIT_FILTERS:
        if name == "role":
            controls.append(field(t("f.role"), select("role", roles, None, t("a.any"))))
        elif name == "action":
            controls.append(field(t("f.action"), text_input("action", None, maxlength=500,
                                                            list="audit-actions")))
            controls.append(h("datalist", [h("option", value=a) for a in actions],
                              id="audit-actions"))
        else:
            controls.append(field(t(f"f.{name}"), text_input(name, None, maxlength=500)))
    controls += [field(t("f.from"), text_input("from", None, "date")),
                 field(t("f.to"), text_input("to", None, "date"))]
    body = join(
        h("p", t("m.audit_intro"), class_="hint"),
        h("form", h("div", controls, class_="grid"),
          h("div", h("button", t("a.search"), type="submit"),
            h("button", t("a.export_csv"), type="button", id="audit-csv", class_="secondary"),
            class_="buttons"),
          id="audit-form"),
        h("p", "", id="audit-error", class_="notice error", role="alert", hidden=True),
        h("p", "", id="audit-total", role="status"),
        h("ul", id="audit-results", class_="cards"),
        h("div", h("button", t("a.next"), type="button", id="audit-more", hidden=True)),
        h("section", h("h2", t("a.verify_chain")),
          h("button", t("a.verify_chain"), type="button", id="verify-chain"),
          h("div", id="chain-result", role="status")),
    )
    return layout(ctx, "audit", t("nav.audit"), body, roles=("auditor",))


def error_page(ctx: PageContext, status: int, code: str, message: str, request_id: str) -> str:
    t = ctx.t
    title = t("e.NOT_FOUND") if status == 404 else t("title.error")
    body = join(
        notice(label(f"e.{code}", ctx.lang) if f"e.{code}" in LABELS else message, "error"),
        h("p", h("small", f"{status} {code} · {t('m.request_id')} {request_id}")),
        h("p", h("a", t("m.back_home"), href="/")),
    )
    return layout(ctx, "error", title, body)


# -- the refusal page (no layout: it must not depend on anything that could fail) ------------
_PLAIN = """<!doctype html>
<html lang="kk">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body>
{body}
</body>
</html>
"""


def refusal(status: int, code: str, message: str, request_id: str) -> str:
    """A page for a browser whose request was refused (anonymiser network, rate limit)."""
    texts = {
        "ANONYMIZER_REFUSED": (
            "Сұрау қабылданбады / Запрос отклонён / Request refused",
            '<p lang="kk">Порталға VPN, прокси немесе Tor арқылы кіруге болмайды. '
            "Тікелей қосылып, қайталап көріңіз.</p>\n"
            '<p lang="ru">Портал не принимает запросы через VPN, прокси-серверы и Tor. '
            "Подключитесь напрямую и повторите попытку.</p>\n"
            '<p lang="en">The portal does not accept requests through VPN services, proxies '
            "or Tor (clauses 05-24..05-28 of the portal rules). Connect directly and try "
            "again.</p>",
        ),
    }
    title, body = texts.get(code, ("Error", f"<p>{html.escape(message)}</p>"))
    body += (
        f"\n<p><small>{status} {html.escape(code)} &middot; request "
        f"{html.escape(request_id)}</small></p>"
    )
    return _PLAIN.format(title=title, body=f"<h1>{title}</h1>\n{body}")
