"""Numbered schema migrations of the SQL backends, as SQL files.

``postgresql/<component>/NNNN_<name>.sql``: each file is one schema
version of ``component`` (``storage``, ``permission``, ``cache``), applied
in order by :meth:`kiln._postgresql.PostgreSQLDatabase.install_schema`
(``kiln migrate``) when the database's recorded version is lower. In a
file, each statement follows a ``-- step: <description>`` line and ends
with ``;`` at the end of a line. Never edit a released file: add the next
number.
"""
