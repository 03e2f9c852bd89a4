"""Kezek services.

psycopg 3's C wait function blocks the eventlet hub, so every process that imports a service
must select the pure-Python ``wait_select`` before psycopg is first imported. Importing any
``services.*`` module runs this first.
"""

import os

os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_select")
