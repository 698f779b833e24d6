"""CSV that a spreadsheet opens as data: the one writer behind every CSV syncd produces.

`syncd export --format csv`, the HTTP API's CSV answers and `syncd metrics --format csv` all
write through `write_rows`. Titles, labels, keys, state names and value stream names come
from trackers and configs, so a cell may hold `=HYPERLINK(…)` or `+cmd|' /C calc'!A0`; Excel,
LibreOffice and Google Sheets run such a cell as a formula when the file is opened (CSV or
formula injection, CWE-1236). Following OWASP, a text cell that begins with `=`, `+`, `-`,
`@`, a tab, a carriage return or a NUL is written with a single quote in front, which makes a
spreadsheet show it as text.

The rule is by type, not by shape: every `str` cell starting with one of those characters is
quoted, a text that reads as a negative number (a state named `-1`) included, so a text column
stays text and no judgement of what some spreadsheet, in some locale, would take for a number
is needed. Numbers (`int`, `float`, `Decimal`) are never quoted: a deviation of `-0.05` stays
the number -0.05. The quote is part of the cell for any program reading the CSV; JSON, JSON
lines and Parquet, being data formats, carry the text unchanged.

This module depends on the standard library only, so the exporter, the API and the CLI can
all import it without importing each other.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from typing import Final, TextIO

#: first characters that make a spreadsheet read a cell as a formula
FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r", "\0")
_CRLF: Final = "\r\n"


def cell(value: object) -> object:
    """A value as its CSV cell holds it: NULL as an empty field, a text that a spreadsheet
    would run as a formula behind a single quote, anything else (numbers) as it is."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def write_rows(
    out: TextIO,
    header: Sequence[str],
    rows: Iterable[Iterable[object]],
    *,
    lineterminator: str,
) -> int:
    """Write the header, then each row, every cell through `cell`, lines ended by
    `lineterminator` (the callers' conventions differ: `\\n` for files, `\\r\\n` for HTTP);
    returns how many rows, the header not counted. A field holding a CR or LF is always
    quoted (RFC 4180), whatever the line end."""
    sink: TextIO | _LineEnd = out if lineterminator == _CRLF else _LineEnd(out, lineterminator)
    writer = csv.writer(sink, lineterminator=_CRLF)
    writer.writerow(map(cell, header))
    count = 0
    for row in rows:
        writer.writerow(map(cell, row))
        count += 1
    return count


class _LineEnd:
    """Gives each line of a CRLF csv writer to `out` with another line end.

    Before 3.11.9 / 3.12.3 (CPython gh-67044), Python's csv writer quoted a field for a
    line-break character only if that character was in its own line terminator: under
    `lineterminator="\\n"` a bare CR in a field went out unquoted, and a reader (or a
    spreadsheet) splits the row there. Writing CRLF lines and changing the end here quotes
    both on every Python version. The writer hands over each row as one string."""

    __slots__ = ("_end", "_out")

    def __init__(self, out: TextIO, end: str) -> None:
        self._out = out
        self._end = end

    def write(self, line: str) -> int:
        if line.endswith(_CRLF):
            line = line[: -len(_CRLF)] + self._end
        return self._out.write(line)
