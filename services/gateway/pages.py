"""The few HTML answers of the gateway until the web pages exist: a placeholder home page and
the page that explains a refusal to a browser."""

from __future__ import annotations

import html

_PAGE = """<!doctype html>
<html lang="kk">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body>
{body}
</body>
</html>
"""


def home() -> str:
    return _PAGE.format(
        title="Kezek",
        body=(
            "<h1>Kezek: балабақшаға электрондық кезек / электронная очередь в детский сад</h1>\n"
            "<p>The web pages are coming. The JSON API is described at "
            '<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</p>'
        ),
    )


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
    return _PAGE.format(title=title, body=f"<h1>{title}</h1>\n{body}")
