"""JSON and CSV bodies, and which of the two a request asks for.

`?format=json|csv` wins; otherwise the `Accept` header's preference (q-values honoured);
otherwise JSON. Instants are ISO 8601 UTC (`2025-12-15T00:00:00+00:00`), days ISO dates.
CSV has a header row with the view's columns; an empty value is NULL; booleans are
`true`/`false` and nested values (labels, distributions) are JSON text; a text cell that
a spreadsheet would run as a formula (first character `=`, `+`, `-`, `@`, tab, CR or NUL)
starts with `'` (`syncd.csvsafe`).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from syncd.csvsafe import write_rows

JSON = "application/json"
CSV = "text/csv"
FORMATS = {"json": JSON, "csv": CSV}


def negotiate(format_param: str | None, accept: str | None) -> str:
    """The media type to answer with: JSON or CSV."""
    if format_param is not None:
        return FORMATS[format_param]
    best, best_q = JSON, 0.0
    for media_range, q in _accepted(accept or ""):
        for candidate in (JSON, CSV):
            if q > best_q and _matches(media_range, candidate):
                best, best_q = candidate, q
    return best


def _accepted(header: str) -> Iterable[tuple[str, float]]:
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if not media:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if 0 < q <= 1:
            yield media.lower(), q


def _matches(media_range: str, media_type: str) -> bool:
    if media_range in ("*/*", media_type):
        return True
    kind, _, sub = media_range.partition("/")
    return sub == "*" and media_type.startswith(kind + "/")


def plain(value: Any) -> Any:
    """A value as JSON has it: ISO text for instants and days, no NaN or infinity."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def json_body(document: Any) -> bytes:
    return json.dumps(plain(document), ensure_ascii=False, separators=(",", ":")).encode()


def _cell(value: Any) -> Any:
    """A value as its CSV cell: numbers stay numbers (never quoted by `write_rows`)."""
    value = plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return value


def csv_body(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """A CSV document (RFC 4180 CRLF lines): the header row, then one line per row (columns
    in `columns` order), text a spreadsheet would run as a formula quoted (`syncd.csvsafe`)."""
    out = io.StringIO()
    write_rows(
        out, columns, ([_cell(row.get(c)) for c in columns] for row in rows), lineterminator="\r\n"
    )
    return out.getvalue().encode()
