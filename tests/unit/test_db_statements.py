"""How ``DatabaseAccess.rows`` turns a ``text()``-style statement into psycopg's."""

from services.common.db import psycopg_style


def test_named_parameters_become_psycopg_placeholders_and_the_rest_stays():
    sql = ("SELECT e.*, x::text, '10%' FROM t WHERE a = :a AND b LIKE :b_1 "
           "AND c = '\\:literal' AND d = ANY(:ds)")
    assert psycopg_style(sql) == (
        "SELECT e.*, x::text, '10%%' FROM t WHERE a = %(a)s AND b LIKE %(b_1)s "
        "AND c = ':literal' AND d = ANY(%(ds)s)")
