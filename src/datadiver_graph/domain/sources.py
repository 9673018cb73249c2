"""Reading one table's documents from a file, streamed: JSON Lines, a JSON array, or CSV.

Each reader yields `(line, document)` one at a time and never holds the file, so memory
stays flat however large it is. A malformed entry raises LineError naming its line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from typing import IO, Any

import orjson

from datadiver_graph.domain.bulk import LineError
from datadiver_graph.domain.convex_format import csv_value

FORMATS = ("jsonl", "json", "csv")
# Convex's names for the same formats (`npx convex import --format`).
FORMAT_ALIASES = {"jsonLines": "jsonl", "jsonArray": "json", "csv": "csv", "jsonl": "jsonl"}
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 16
# One element of a JSON array may be this large (Convex caps a whole .json import at 8 MiB).
_MAX_ELEMENT = 16 << 20

Numbered = Iterator[tuple[int, Any]]


def format_for(name: str, override: str | None) -> str | None:
    """The format from `--format`, else from the file name's extension."""
    if override is not None:
        return FORMAT_ALIASES.get(override, override if override in FORMATS else None)
    lower = name.lower()
    for ext, fmt in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".csv", "csv")):
        if lower.endswith(ext):
            return fmt
    return None


def read(fmt: str, stream: IO[bytes], where: str) -> Numbered:
    if fmt == "jsonl":
        return read_jsonl(stream, where)
    if fmt == "json":
        return read_json_array(stream, where)
    if fmt == "csv":
        return read_csv(stream, where)
    raise ValueError(fmt)


def read_jsonl(stream: IO[bytes], where: str) -> Numbered:
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if number == 1 and line.startswith(_BOM):  # files saved by Windows editors
            line = line[len(_BOM) :].strip()
        if not line:
            continue
        try:
            yield number, orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise LineError(where, number, f"not valid JSON ({exc})") from None


def read_json_array(stream: IO[bytes], where: str) -> Numbered:
    """The elements of one top-level JSON array, decoded one at a time from a sliding
    buffer; each is numbered by the line it starts on."""
    decoder = json.JSONDecoder()
    text = codecs.getincrementaldecoder("utf-8-sig")()
    buffer = ""
    line = 1  # the line `buffer[0]` is on
    pos = 0
    eof = False
    state = "start"  # start -> item -> comma-or-end -> item ... -> done

    def fill() -> bool:
        nonlocal buffer, pos, line, eof
        if eof:
            return False
        chunk = stream.read(_CHUNK)
        if not chunk:
            eof = True
            buffer = buffer[pos:] + text.decode(b"", final=True)
        else:
            buffer = buffer[pos:] + text.decode(chunk)
        pos = 0
        return True

    def skip_space() -> bool:
        nonlocal pos, line
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n":
                if buffer[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buffer):
                return True
            if not fill():
                return False

    while True:
        if not skip_space():
            if state == "done":
                return
            raise LineError(where, line, "the JSON array is not closed")
        char = buffer[pos]
        if state == "start":
            if char != "[":
                raise LineError(where, line, "a .json file must hold one JSON array")
            pos += 1
            state = "first"
        elif state in ("first", "item"):
            if char == "]" and state == "first":
                pos += 1
                state = "done"
                continue
            while True:
                try:
                    value, end = decoder.raw_decode(buffer, pos)
                except json.JSONDecodeError as exc:
                    # The element may run past the buffer: read more, up to a bound.
                    if len(buffer) - pos < _MAX_ELEMENT and fill():
                        continue
                    raise LineError(where, line, f"not valid JSON ({exc.msg})") from None
                if end == len(buffer) and not eof and fill():
                    continue  # a number may go on in the next chunk
                break
            yield line, value
            line += buffer.count("\n", pos, end)
            pos = end
            state = "next"
        elif state == "next":
            pos += 1
            if char == ",":
                state = "item"
            elif char == "]":
                state = "done"
            else:
                raise LineError(where, line, f"expected ',' or ']' after an element, not {char!r}")
        else:
            raise LineError(where, line, "content after the JSON array")


def read_csv(stream: IO[bytes], where: str) -> Numbered:
    """A header row, then one document per row; empty cells are left out."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise LineError(where, reader.line_num, f"not valid CSV ({exc})") from None
    if len(set(header)) != len(header) or not all(header):
        raise LineError(where, 1, "the header row must name each column once")
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise LineError(where, start, f"not valid CSV ({exc})") from None
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise LineError(where, start, f"{len(row)} cells for {len(header)} columns")
        yield (
            start,
            {name: csv_value(cell) for name, cell in zip(header, row, strict=True) if cell != ""},
        )
