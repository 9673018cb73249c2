"""Import and export of whole tables: the modes, and one imported document's validation.

The import itself (staging, swap) is `domain.importer`; the files, `domain.sources` and
`domain.snapshot`.
"""

from __future__ import annotations

import enum
from typing import Any

from datadiver_graph.domain.convex_format import decode_value
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.ids import check_id
from datadiver_graph.domain.records import Record, new_id
from datadiver_graph.domain.tables import Table


class ImportMode(enum.Enum):
    EMPTY_ONLY = "empty-only"  # refuse a table that holds documents
    APPEND = "append"
    REPLACE = "replace"  # the tables in the file
    REPLACE_ALL = "replace-all"  # every table: those not in the file end up empty


class LineError(InvalidInput):
    """A bad entry of an import file: `where` is the file (or zip member), `line` its line
    (or CSV row, counted as lines)."""

    def __init__(self, where: str, line: int, message: str) -> None:
        super().__init__(f"{where}: line {line}: {message}")
        self.where = where
        self.line = line


def parse_record(table: Table, doc: Any, where: str, line: int) -> Record:
    """Validate one imported document. Convex's `_creationTime` stands in for `createdAt`,
    and Convex's encoded values (`$integer`, `$bytes`, ...) are decoded first."""
    if not isinstance(doc, dict):
        raise LineError(where, line, "a document must be a JSON object")
    try:
        doc = decode_value(doc, "")
    except InvalidInput as exc:
        raise LineError(where, line, exc.message) from None
    doc.setdefault("_id", new_id())
    creation_time = doc.pop("_creationTime", None)
    if creation_time is not None and "createdAt" not in doc:
        if not isinstance(creation_time, int | float) or isinstance(creation_time, bool):
            raise LineError(where, line, "_creationTime must be a number")
        doc["createdAt"] = int(creation_time)
    table.defaults(doc)
    try:
        record = table.record.from_untrusted(doc)
        stored = record.to_doc()
        for field in table.id_fields:
            if stored.get(field) is not None:
                check_id(stored[field], field)
    except InvalidInput as exc:
        raise LineError(where, line, exc.message) from None
    return record
