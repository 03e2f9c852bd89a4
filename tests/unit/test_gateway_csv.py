"""CSV exports: stable header, formula cells defused, nested values flattened."""

import csv
import io

import pytest

from services.gateway import csvout


def parse(text):
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize(
    "cell", ['=HYPERLINK("http://x")', "+7701", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]
)
def test_cells_a_spreadsheet_would_run_get_an_apostrophe(cell):
    assert csvout.escape_cell(cell) == "'" + cell


@pytest.mark.parametrize(
    "value,expected",
    [
        ("Almaly", "Almaly"),
        ("a=b", "a=b"),
        (None, ""),
        (True, "true"),
        (False, "false"),
        (-5, "-5"),
        (3.5, "3.5"),
        (["kk", "ru"], "kk; ru"),
        (["=1", "x"], "'=1; x"),
    ],
)
def test_ordinary_values(value, expected):
    assert csvout.escape_cell(value) == expected


def test_header_is_the_same_with_or_without_rows():
    columns = ["queue_number", "child_name", "stop_list.reason"]
    empty = parse(csvout.render(columns, []))
    full = parse(
        csvout.render(
            columns,
            [
                {
                    "queue_number": 1,
                    "child_name": "=cmd|'/c calc'!A0",
                    "stop_list": {"reason": "postponed"},
                },
                {"queue_number": 2, "stop_list": None},
            ],
        )
    )
    assert empty == [columns]
    assert full[0] == columns
    assert full[1] == ["1", "'=cmd|'/c calc'!A0", "postponed"]
    assert full[2] == ["2", "", ""]


def test_quotes_commas_and_newlines_survive():
    rows = parse(csvout.render(["name"], [{"name": 'Балабақша "Айгөлек", №5\nАлматы'}]))
    assert rows[1] == ['Балабақша "Айгөлек", №5\nАлматы']


def test_statistics_become_long_rows():
    stats = {
        "queues": [
            {
                "queue_name": "Almaly/general/2022",
                "district": "Almaly",
                "children": 12,
                "with_benefit": "<5",
            }
        ],
        "suppress_below": 5,
        "republished_at": None,
    }
    rows = csvout.statistics_rows(stats)
    assert {(r["section"], r["measure"], r["value"]) for r in rows} == {
        ("queues", "children", 12),
        ("queues", "with_benefit", "<5"),
    }
    assert all(r["district"] == "Almaly" for r in rows)
