"""The one CSV reader of zoo: `zoo predict`'s files, `/classify`'s text/csv bodies and the training data.

What spreadsheets write is accepted: a UTF-8 byte-order mark (Excel's "CSV UTF-8"), `;` between values
(Excel where the decimal separator is a comma, the UCI wine files) as well as `,`, quoted names, blank
lines. What would be read wrongly without a word is refused: a column name given twice (names are matched
without regard to case, so `ph` and `PH` are the same column), a row with more values than the header.
Series CSVs with timestamps are put in time order, and gaps or repeated timestamps are reported."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from zoo.contract import decimal_comma

SEPARATORS = (",", ";")


@dataclass(frozen=True)
class Table:
    name: str                 # how messages name the source: a file name, "the CSV body"
    header: list[str]         # column names, stripped
    rows: list[list[str]]     # one list of cells per data row, as long as the header
    lines: list[int]          # each row's line number in the source (the header is line 1)
    separator: str

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.header, row)) for row in self.rows]

    def find(self, column: str) -> int | None:
        """The index of `column` (matched without regard to case or surrounding spaces), or None."""
        wanted = column.strip().lower()
        return next((i for i, h in enumerate(self.header) if h.lower() == wanted), None)

    def index(self, column: str) -> int:
        i = self.find(column)
        if i is None:
            raise ValueError(f"{self.name} has no column {column!r}; found {self.header}")
        return i


def _text(source: bytes | str, name: str) -> str:
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{name} is not UTF-8 text (byte 0x{source[e.start]:02x} at offset {e.start}): save it "
                             "as CSV UTF-8") from None
    return source.removeprefix("\ufeff")   # the byte-order mark Excel's "CSV UTF-8" starts with


def _separator(first_line: str, name: str) -> str:
    counts = {s: first_line.count(s) for s in SEPARATORS}
    if not any(counts.values()) and "\t" in first_line:
        raise ValueError(f"{name} seems to use tabs between values; expected a CSV with ',' or ';' between them")
    return ";" if counts[";"] > counts[","] else ","


def _check_header(header: list[str], name: str, separator: str) -> None:
    seen: dict[str, int] = {}
    for i, column in enumerate(header):
        key = column.lower()
        if key and key in seen:
            first = header[seen[key]]
            case = "" if first == column else f" as {column!r}: names are matched without regard to case"
            raise ValueError(f"{name}: column {first!r} appears twice in the header (columns {seen[key] + 1} "
                             f"and {i + 1}{case}); which to use is ambiguous, so keep one")
        seen.setdefault(key, i)
    if len(header) == 1 and not header[0]:
        raise ValueError(f"{name} has an empty header line; expected column names separated by '{separator}'")


def read_csv(source: bytes | str | Path, name: str | None = None) -> Table:
    """A CSV file (a Path), or its bytes or text, as a Table. ValueError saying what is wrong otherwise;
    a header without rows is a Table without rows (the caller says what it needed)."""
    if isinstance(source, Path):
        name = name or source.name
        try:
            source = source.read_bytes()
        except OSError as e:
            raise ValueError(f"cannot read CSV {source}: {e.strerror or e}") from None
    name = name or "the CSV"
    text = _text(source, name)
    separator = _separator(text[:text.find("\n")] if "\n" in text else text, name)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    try:
        header = [h.strip() for h in next(reader, [])]
        if not header:
            raise ValueError(f"{name} is empty; expected a header line with the column names")
        _check_header(header, name, separator)
        rows, lines = [], []
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
                raise ValueError(f"{name} line {reader.line_num} has {len(cells)} values but the header names "
                                 f"{len(header)} columns (values separated by '{separator}')")
            rows.append([c.strip() for c in cells[:len(header)]] + [""] * (len(header) - len(cells)))
            lines.append(reader.line_num)
    except csv.Error as e:
        raise ValueError(f"{name} line {reader.line_num} is not valid CSV: {e}") from None
    return Table(name, header, rows, lines, separator)


# --- series -------------------------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def step_of(times: np.ndarray) -> int | None:
    """The spacing of readings taken at `times` (datetime64, in time order), in seconds: the most common
    difference between consecutive timestamps; None for fewer than two distinct ones."""
    seconds = np.diff(np.asarray(times, "datetime64[s]")).astype(np.int64)
    positive = seconds[seconds > 0]
    return int(Counter(positive.tolist()).most_common(1)[0][0]) if len(positive) else None


def step_problems(times: np.ndarray, step: int | None = None) -> list[str]:
    """What is uneven about readings taken at `times` (datetime64, in time order): repeated timestamps,
    gaps longer than the step, steps shorter than it. `step` (seconds): the spacing the readings should
    have, by default `step_of(times)`. [] when evenly spaced."""
    stamps = np.asarray(times, "datetime64[s]")
    seconds = np.diff(stamps).astype(np.int64)
    step = step or step_of(stamps)
    if step is None:   # one reading, or every one at the same time
        return [f"all {len(stamps)} readings have the same timestamp"] if len(stamps) > 1 else []
    problems = []
    repeated = np.flatnonzero(seconds == 0)
    if len(repeated):
        problems.append(f"{len(repeated)} repeated timestamp(s) (first {_when(stamps[repeated[0]])})")
    gaps = np.flatnonzero(seconds > step)
    if len(gaps):
        longest = gaps[np.argmax(seconds[gaps])]
        problems.append(f"{len(gaps)} gap(s) (the longest {_duration(seconds[longest])} after "
                        f"{_when(stamps[longest])})")
    short = np.flatnonzero((seconds > 0) & (seconds < step))
    if len(short):
        problems.append(f"{len(short)} step(s) shorter than that")
    if problems:
        problems[0] = f"readings every {_duration(step)}, but " + problems[0]
    return problems


def _when(stamp: np.datetime64) -> str:
    return str(stamp).replace("T", " ")


def read_series(source: bytes | str | Path | Table, column: str, window: int | None = None,
                name: str | None = None) -> tuple[list[float], np.ndarray | None, list[str]]:
    """A series CSV's `column` as numbers, in time order: sorted by its `timestamp` column when it has one
    (as training sorts the readings), else in file order. Returns (values, their timestamps as
    datetime64[s] (times with a zone in UTC) or None, warnings): the warnings say what is uneven about the
    timestamps of the last `window` readings (all of them by default), which is what the model reads."""
    table = source if isinstance(source, Table) else read_csv(source, name)
    if not table.rows:
        raise ValueError(f"{table.name} has a header but no rows")
    key = table.index(column)
    values = []
    for row, line in zip(table.rows, table.lines):
        try:
            values.append(float(row[key]))
        except ValueError:
            raise ValueError(f"{table.name} line {line}: {column} must be a number, got {row[key]!r}"
                             + decimal_comma(row[key])) from None
    stamp = table.find("timestamp")
    if stamp is None:
        return values, None, []
    times = []
    for row, line in zip(table.rows, table.lines):
        try:
            times.append(datetime.fromisoformat(row[stamp]))
        except ValueError:
            raise ValueError(f"{table.name} line {line}: timestamp must be an ISO date and time such as "
                             f"2024-01-01 00:15:00, got {row[stamp]!r}") from None
    try:
        order = sorted(range(len(values)), key=times.__getitem__)   # stable: ties keep file order
    except TypeError:
        raise ValueError(f"{table.name}: timestamps mix time zones and naive times; use one kind") from None
    stamps = np.array([times[i].replace(tzinfo=None) - (times[i].utcoffset() or timedelta()) for i in order],
                      dtype="datetime64[s]")
    used = stamps[-window:] if window else stamps
    problems = "; ".join(step_problems(used, step=step_of(stamps)))
    if not problems:
        warnings = []
    elif window:
        warnings = [f"the last {len(used)} readings (the model's window) are unevenly spaced: {problems}; the "
                    "model was trained on evenly spaced readings"]
    else:
        warnings = [f"the readings are unevenly spaced: {problems}"]
    return [values[i] for i in order], stamps, warnings
