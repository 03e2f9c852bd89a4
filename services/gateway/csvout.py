"""CSV exports of registries and the audit log.

The header is fixed per route (or named by the service's ``columns``), so it does not change with
the data. Nested values are flattened with dotted names (``stop_list.reason``), lists are joined
with "; ". A text cell that a spreadsheet would run as a formula (starting with = + - @, tab or
carriage return) gets a leading apostrophe.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)  # a number is data, not a formula, even when negative
    if isinstance(value, (list, tuple)):
        value = "; ".join(_plain(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False, sort_keys=True)
    else:
        value = str(value)
    if value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def lookup(item: Any, column: str) -> Any:
    """``stop_list.reason`` -> item["stop_list"]["reason"] (None when any part is missing)."""
    value = item
    for part in column.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def render(columns: Sequence[str], rows: Iterable[Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([escape_cell(c) for c in columns])
    for row in rows:
        writer.writerow([escape_cell(lookup(row, c)) for c in columns])
    return buffer.getvalue()


STAT_DIMENSIONS = (
    "day",
    "queue_name",
    "district",
    "queue_type",
    "birth_year",
    "direction_type",
    "organization_id",
    "organization_name",
    "source",
    "event_type",
)


def statistics_rows(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Statistics in long form: one row per (section, dimensions, measure, value)."""
    rows: list[dict[str, Any]] = []
    for section, entries in stats.items():
        if not isinstance(entries, list):
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            dims = {k: entry.get(k) for k in STAT_DIMENSIONS if k in entry}
            for key, value in entry.items():
                if key in STAT_DIMENSIONS or isinstance(value, (dict, list)):
                    continue
                rows.append({"section": section, **dims, "measure": key, "value": value})
    return rows
