"""The labelled holdout, streamed in chunks: a CSV never needs its size in memory.

A CSV has a header row; the label column and the slice columns are named there, and every other column is a
feature, in file order. Chunks of :data:`CHUNK_ROWS` lines are parsed by numpy's C reader, in one pass when
the label is a number (features and label together) and the chunk is plain; a chunk the fast pass refuses
(a value that is not a number, a line of spaces, an empty or NaN label, a row with more or fewer fields than
the header) is read again the careful way, which either reads it (the same values) or names the row and
column at fault (or the row's and the header's field counts).

Fields may be quoted as RFC 4180 quotes them: a delimiter, a newline (CRLF or LF) or a doubled quote ``""``
inside the quotes. A chunk that ends inside a quoted field takes the lines that close it (the csv module
finds where its rows end, numpy's reader splits rows alike); a quoted field still open at the end of the file
is named by its row, as is one past the csv module's field limit (128 KiB: a quote left open), quoted or not,
in every chunk the csv module reads: with a column read as text, each chunk with a quote or a line past the
limit (numbers only, numpy reads a number of any length). A quote is a quote only at a field's start
(``4"5`` is a value that is not a number). A byte-order mark is dropped.

A small CSV of numbers (at most :data:`WHOLE_FILE_MAX_BYTES`, numeric labels, no slices) is first parsed
whole by the same fast pass, given the file's path: only a path reaches numpy's block reader, which spares
making a Python string of every line (the plain loop the bench compares with reads this way). Its rows are
then handed out in chunks of :data:`CHUNK_ROWS` rows, so the models score the same batches (the report does
not depend on them anyway); a file the fast pass refuses is streamed instead, so every error reads as
before. An ``.npz`` holds the features as the 2-D array ``X`` and the label (and any slice) as 1-D arrays of
the given names; numpy loads each array whole, so use CSV for holdouts larger than memory.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple, TextIO

import numpy as np
import numpy.typing as npt

from mlrollout_serving.evaluation.errors import BadInput, shown

CHUNK_ROWS: Final = 8192
# A CSV up to this size is parsed whole (see the module's docstring). Only float64 columns are held: the table
# (features and label) and the label column's copy. Each number takes at least 2 bytes in the file (a digit
# and a comma or newline) and 8 parsed, so at worst (two columns of single digits) the file costs 6 times its
# size, 192 MiB here; a typical one about 1.2 times (a noisy wine row: 100 bytes in the CSV, 120 parsed; the
# bench's 61 MiB CSV grew the peak by 72 MiB). With the interpreter, onnxruntime and both sessions (about
# 90 MiB) that stays within a 512 MiB limit (the Job's default is 1 GiB); under a smaller limit the Job
# parses whole only what fits at worst (:func:`whole_file_budget`). Larger files stream.
WHOLE_FILE_MAX_BYTES: Final = 32 << 20
_WORST_GROWTH: Final = 6  # parsed bytes per CSV byte at worst (above)
_BASE_BYTES: Final = 160 << 20  # the Job's peak besides the table (about 90 MiB measured), with room
# the container's memory limit: cgroup v2 (a container sees its own cgroup at the root), then v1
MEMORY_LIMIT_FILES: Final = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
# numpy's reader opens a path by its name and decompresses these; a streamed file is read as it is
_COMPRESSED_SUFFIXES: Final = frozenset({".gz", ".bz2", ".xz", ".lzma"})
NPZ_FEATURES: Final = ("X", "x", "features")
MISSING_LABELS: Final = frozenset({"", "nan"})  # compared lower-cased
Labels = npt.NDArray[np.str_] | npt.NDArray[np.float64]  # the label column as text, or as the numbers it holds


class Chunk(NamedTuple):
    """Consecutive rows of the holdout: features (float64, rows x columns), labels (text, or numbers when they
    were asked for as numbers and read as such) and slice values as text. (Named tuples here, not dataclasses,
    whose generated methods cost the Job's start-up about 0.5 ms a class: docs/evaluation.md.)"""

    first_row: int  # 1-based data row (the header is row 0)
    features: npt.NDArray[np.float64]
    labels: Labels
    slices: dict[str, npt.NDArray[np.str_]]

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


class Layout(NamedTuple):
    """Where the label, the slices and the features are."""

    columns: tuple[str, ...]
    label: int
    slices: dict[str, int]
    features: tuple[int, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.columns[i] for i in self.features)


def layout(columns: Sequence[str], label: str, slices: Sequence[str]) -> Layout:
    """The columns' roles from the header; a missing label or slice column names the ones there are."""
    names = tuple(c.strip() for c in columns)
    if "" in names:  # a spreadsheet's trailing delimiter, say: a nameless column would be read as a feature
        at = names.index("")
        raise BadInput(
            f"column {at + 1} of the dataset's header has no name"
            + (" (a trailing ',')" if at == len(names) - 1 else "")
        )
    seen = [n for n in names if names.count(n) > 1]
    if seen:
        raise BadInput(f"the dataset's header repeats column {seen[0]!r}")
    index = {n: i for i, n in enumerate(names)}
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    if label not in index:
        raise BadInput(f"label column {label!r} is not in the dataset (columns: {shown})")
    for name in slices:
        if name not in index:
            raise BadInput(f"slice column {name!r} is not in the dataset (columns: {shown})")
    special = {index[label], *(index[s] for s in slices)}
    features = tuple(i for i in range(len(names)) if i not in special)
    if not features:
        raise BadInput("the dataset has no feature columns besides the label and slices")
    return Layout(names, index[label], {s: index[s] for s in slices}, features)


class Holdout:
    """An opened holdout: its feature columns' names, and its rows in chunks (read once, in order). As a
    context manager it closes the file however the reading ends (or if it never starts)."""

    def __init__(
        self, feature_names: tuple[str, ...], chunks: Callable[[bool], Iterator[Chunk]], close: Callable[[], None]
    ) -> None:
        self.feature_names = feature_names
        self._chunks = chunks
        self.close = close

    def __enter__(self) -> Holdout:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def chunks(self, numeric_labels: bool = False) -> Iterator[Chunk]:
        """The rows in chunks; ``numeric_labels``: labels as float64 where they read as numbers (the models
        predict integer classes or values), which spares the text and its conversion."""
        return self._chunks(numeric_labels)


def whole_file_budget(limit_files: Sequence[Path] = MEMORY_LIMIT_FILES) -> int:
    """The largest CSV to parse whole under this process's memory limit: at most :data:`WHOLE_FILE_MAX_BYTES`,
    and small enough that its worst-case table fits beside the Job's own peak, so a Job given a small
    ``resources.memory`` streams rather than being OOM-killed. No limit found (or ``max``): the constant."""
    for path in limit_files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():  # cgroup v1 writes a huge number for "no limit": the min() below caps it
            return max(0, min(WHOLE_FILE_MAX_BYTES, (int(text) - _BASE_BYTES) // _WORST_GROWTH))
        return WHOLE_FILE_MAX_BYTES  # "max": no limit
    return WHOLE_FILE_MAX_BYTES


def open_holdout(
    path: Path,
    fmt: str,
    label: str,
    slices: Sequence[str],
    chunk_rows: int = CHUNK_ROWS,
    whole_file_max_bytes: int = WHOLE_FILE_MAX_BYTES,
) -> Holdout:
    """The holdout at ``path``; BadInput names the first problem (an empty file is one). A CSV of at most
    ``whole_file_max_bytes`` may be parsed whole (the module's docstring; 0: always streamed)."""
    if fmt == "npz":
        return _open_npz(path, label, slices, chunk_rows)
    return _open_csv(path, label, slices, chunk_rows, whole_file_max_bytes)


def _open_csv(path: Path, label: str, slices: Sequence[str], chunk_rows: int, whole_file_max_bytes: int) -> Holdout:
    try:  # utf-8-sig: a byte-order mark (a spreadsheet's export) is no part of the first column's name
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise BadInput(f"cannot read the dataset: {e.strerror or e}") from None
    try:
        lines = [handle.readline()]
        if '"' in lines[0]:
            _finish_rows(lines, handle, 0)  # a quoted name may hold a newline
        header = next(_csv_rows(lines, 0), [])  # (0: "the header" past the field limit)
    except UnicodeDecodeError:
        handle.close()
        raise BadInput("the dataset is not UTF-8 text (is it a CSV? format: npz for numpy archives)") from None
    except BadInput:
        handle.close()
        raise
    if not header or header == [""]:
        handle.close()
        raise BadInput("the dataset is empty (no header row)")
    try:
        lay = layout(header, label, slices)
    except BadInput:
        handle.close()
        raise
    size = os.fstat(handle.fileno()).st_size
    # numpy's whole read skips one line for the header: a header of more lines streams
    plain = not slices and path.suffix not in _COMPRESSED_SUFFIXES and len(lines) == 1
    whole = path if size <= whole_file_max_bytes and plain and not _open_at_end(handle.fileno(), size) else None
    return Holdout(
        lay.feature_names, lambda numeric: _csv_chunks(handle, lay, chunk_rows, numeric, whole), handle.close
    )


def _csv_chunks(
    handle: TextIO, lay: Layout, chunk_rows: int, numeric_labels: bool, whole: Path | None
) -> Iterator[Chunk]:
    """Chunks of ``chunk_rows`` lines (blank lines are no rows; the row numbers count data rows only), and
    the lines that end a row a quoted field keeps open at a chunk's end. With ``whole`` (the file's path) and
    numeric labels, the fast pass first reads the whole file; only if it refuses is the file streamed (from
    the line after the header, where ``handle`` still is)."""
    with handle:
        if whole is not None and numeric_labels:
            table = _parse_fast(whole, lay, 1, numeric_labels)
            if table is not None:
                yield from _split(table, chunk_rows)
                return
        first = 1
        numbers = numeric_labels and not lay.slices  # every column read as a number
        while True:
            try:
                lines = list(itertools.islice(handle, chunk_rows))
            except UnicodeDecodeError:
                raise BadInput(f"the dataset is not UTF-8 text after row {first - 1}") from None
            if not lines:
                break
            text = "".join(lines)
            within: frozenset[int] = frozenset()
            # a quoted field may hold newlines: the chunk takes the rest of a row open at its end, and a line
            # within a quoted field is not blank (only a quote opens one: none, and every line is a row). With a
            # column read as text the csv module reads the chunk first (the fast pass counts fields with it), and
            # also when a line is past its field limit: a field over it is refused by its row whatever the chunk
            scan = '"' in text or (not numbers and _long_line(text, lines))
            chunk = _parse_fast(lines, lay, first, numeric_labels) if numbers or not scan else None
            if scan and not (chunk is not None and numbers and _closed(text)):
                count = len(lines)
                try:
                    within = _finish_rows(lines, handle, first)
                except UnicodeDecodeError:
                    raise BadInput(f"the dataset is not UTF-8 text after row {first - 1}") from None
                if len(lines) > count or not numbers:
                    chunk = _parse_fast(lines, lay, first, numeric_labels)
            if chunk is None:
                kept = [line for i, line in enumerate(lines) if line.strip() or i in within]
                if not kept:
                    continue
                chunk = _parse_lines(kept, lay, first)
            if chunk.rows:
                yield chunk
                first += chunk.rows
        if first == 1:
            raise BadInput("the dataset has a header but no rows")


def _closed(text: str) -> bool:
    """Whether a chunk of numbers that the fast pass read (every column a number) ends outside quotes, told
    without the csv module (a chunk whose every field is quoted: 2.4 times the chunk's time with it). A field
    open at the chunk's end holds a number (the fast pass read it): no quote, so it opened at the last quote,
    and no delimiter, and not only blanks. A delimiter or only blanks after the last quote: closed."""
    after = text[text.rfind('"') + 1 :]
    return "," in after or not after.strip()


def _open_at_end(fd: int, size: int) -> bool:
    """Whether the file may end inside a quoted field (its last 64 KiB read). numpy's whole read takes a field
    still open at the end for closed (``...,"1`` reads as 1), where the stream names the row: such a file
    streams. Read whole, every field is a number, so an open one holds neither a quote nor a delimiter: the
    text after the file's last quote would be more than blanks, without a delimiter."""
    tail = os.pread(fd, min(size, 1 << 16), max(0, size - (1 << 16)))
    at = tail.rfind(b'"')
    if at < 0 and size <= len(tail):
        return False  # no quote at all
    after = tail[at + 1 :]
    return b"," not in after and bool(after.strip())


def _finish_rows(lines: list[str], handle: TextIO, first: int) -> frozenset[int]:
    """Extends ``lines`` with the lines of ``handle`` that end a quoted field open at their end (RFC 4180: a
    quoted field may hold delimiters, newlines and doubled quotes; the csv module splits rows where numpy's
    reader does); returns the indices of the lines that continue a row (inside a quoted field). ``first``:
    the number of the first line's row (0: the header). BadInput names the row whose quoted field is still
    open at the end of the file, or outgrows the csv module's field limit (128 KiB: a quote left open)."""
    count = len(lines)
    ended = False

    def source() -> Iterator[str]:
        nonlocal ended
        yield from lines[:count]
        for line in handle:  # only asked for within a row: the loop below stops at the chunk's last row
            lines.append(line)
            yield line
        ended = True

    within: list[int] = []
    rows = start = 0
    reader = csv.reader(source())
    try:
        for _ in reader:
            end = reader.line_num
            if ended:
                raise BadInput(f"{_row(first + rows)}: a quoted field is not closed by the end of the file")
            within.extend(range(start + 1, end))
            rows += end - start > 1 or bool(lines[start].strip())  # blank lines are no rows
            start = end
            if end >= count:
                break
    except csv.Error as e:  # the field limit: past it on the file's last line, a field still open is named so
        if not ended and not handle.readline() and _ends_open("".join(lines[start:])):
            raise BadInput(f"{_row(first + rows)}: a quoted field is not closed by the end of the file") from None
        raise BadInput(_past_limit(first + rows, e)) from None
    return frozenset(within)


def _past_limit(row: int, error: csv.Error) -> str:
    return f"{_row(row)}: {error} (a quoted field left open?)"


def _long_line(text: str, lines: list[str]) -> bool:
    """Whether a line of the chunk is longer than the csv module's field limit (so may hold a field past it)."""
    limit = csv.field_size_limit()
    return len(text) > limit and max(map(len, lines)) > limit


_QUOTED: Final = re.compile(r'"[^"]*(?:""[^"]*)*"(?!")')


def _ends_open(text: str) -> bool:
    """Whether ``text`` (a row's lines) ends inside a quoted field, read as the csv module reads: a quote
    opens a field only at its start, ``""`` inside is a quote, and what follows the closing quote up to the
    delimiter is part of the field."""
    at = 0
    while at < len(text):
        if text[at] == '"':
            quoted = _QUOTED.match(text, at)
            if quoted is None:
                return True
            at = quoted.end()
        ends = [i for i in (text.find(c, at) for c in ",\r\n") if i >= 0]
        if not ends:
            return False
        at = min(ends) + 1
    return False


def _row(number: int) -> str:
    return f"row {number}" if number else "the header"


def _split(whole: Chunk, rows: int) -> Iterator[Chunk]:
    """``whole`` in chunks of ``rows`` rows (views: the table is not copied)."""
    for start in range(0, whole.rows, rows):
        end = start + rows
        parts = {name: values[start:end] for name, values in whole.slices.items()}
        yield Chunk(whole.first_row + start, whole.features[start:end], whole.labels[start:end], parts)


def _parse_fast(lines: list[str] | Path, lay: Layout, first: int, numeric_labels: bool) -> Chunk | None:
    """The chunk in one pass of numpy's reader when it is plain (None: let :func:`_parse_lines` read it).
    ``lines``: the chunk's lines, or the path of a whole CSV (its header skipped).

    numpy skips empty lines as the careful pass does; a line of spaces, a value that is not a number, a NaN
    label (which the careful pass tells from an empty one) or a row with more fields than the header sends
    the chunk to the careful pass. Numbers only (numeric labels, no slices; the whole file's case): every
    column is read, so numpy itself refuses a row whose field count differs from the first row's, and the
    table's width is the header's; else numpy reads the columns asked for and ignores further fields, so
    the lines' delimiters are counted (:func:`_same_width`; short rows numpy refuses)."""
    labels: Labels
    width = len(lay.columns)
    text_columns = (*(() if numeric_labels else (lay.label,)), *lay.slices.values())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy's "no data" for a chunk of blank lines
            if not text_columns:
                table = _read(lines, np.float64, None)
                if table.shape[1] != width:  # one row, or every row, longer than the header
                    return None
                features, labels = _columns(table, lay)
                texts = np.empty((len(features), 0), dtype=str)
            else:
                if numeric_labels:
                    table = _read(lines, np.float64, (*lay.features, lay.label))
                    features, labels = table[:, :-1], table[:, -1].copy()  # kept per row: not a view of the table
                else:
                    features = _read(lines, np.float64, lay.features)
                texts = _read(lines, str, text_columns)
    except ValueError:
        return None
    if len(features) == 0 or len(texts) != len(features):
        return None
    if text_columns and (isinstance(lines, Path) or not _same_width(lines, width, len(features), first)):
        return None  # (a path never has text columns: only numbers are read whole)
    if numeric_labels:
        if np.isnan(labels).any():
            return None
    else:
        labels, texts = np.char.strip(texts[:, 0]), texts[:, 1:]
    return Chunk(first, features, labels, {name: np.char.strip(texts[:, i]) for i, name in enumerate(lay.slices)})


def _columns(table: npt.NDArray[np.float64], lay: Layout) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The features and the label (a copy, kept per row) of a table of every column, in file order: a view
    of the table when the label is the last or the first column, else a copy of the feature columns (about
    3 ms at 100,000 rows of 14 columns; numpy's own column pick would read no faster, and lets long rows by)."""
    labels = table[:, lay.label].copy()
    if lay.label == table.shape[1] - 1:
        return table[:, :-1], labels
    if lay.label == 0:
        return table[:, 1:], labels
    return np.delete(table, lay.label, axis=1), labels  # two block copies: 2.5 times faster than fancy indexing


def _same_width(lines: list[str], width: int, rows: int, first: int) -> bool:
    """Whether ``rows`` rows (the lines but blank ones) have ``width`` fields each, given that none has fewer
    (numpy refused those): their delimiters counted over the chunk's text, in C; when a field is quoted
    (a delimiter may be in it), each line read by the csv module, which numpy's reader agrees with."""
    text = "".join(lines)
    if '"' not in text:
        return text.count(",") == rows * (width - 1)
    return all(len(row) in (0, width) for row in _csv_rows(lines, first))


def _csv_rows(lines: Iterable[str], first: int) -> Iterator[list[str]]:
    """The csv module's rows of a chunk whose first row is number ``first``; a field past its limit (the
    stream's scan names it first: a safety net) is BadInput naming the row."""
    rows = 0
    try:
        for row in csv.reader(lines):
            rows += bool(row)
            yield row
    except csv.Error as e:
        raise BadInput(_past_limit(first + rows, e)) from None


def _read(lines: list[str] | Path, dtype: Any, usecols: Sequence[int] | None) -> npt.NDArray[Any]:
    """numpy's reader over a chunk's lines, or over a whole CSV's path (a path reaches its block reader; the
    header is skipped, and the text decoded as UTF-8, as the stream decodes it)."""
    whole = isinstance(lines, Path)
    return np.loadtxt(
        str(lines) if whole else lines, delimiter=",", quotechar='"', comments=None, dtype=dtype, usecols=usecols,
        ndmin=2, skiprows=1 if whole else 0, encoding="utf-8" if whole else None,
    )  # fmt: skip


def _parse_lines(lines: list[str], lay: Layout, first: int) -> Chunk:
    """The chunk's lines (no blank ones) read column by column; BadInput names the first row at fault: a
    value numpy cannot read, a row with fewer fields than the header (numpy refuses it) or more (numpy
    ignores fields beyond the columns asked for: they are counted)."""
    try:
        features = np.loadtxt(
            lines, delimiter=",", quotechar='"', comments=None, dtype=np.float64, usecols=lay.features, ndmin=2
        )
        texts = np.loadtxt(
            lines, delimiter=",", quotechar='"', comments=None, dtype=str,
            usecols=(lay.label, *lay.slices.values()), ndmin=2,
        )  # fmt: skip
    except ValueError:
        raise BadInput(_locate(lines, lay, first)) from None
    if not _same_width(lines, len(lay.columns), len(features), first):
        raise BadInput(_locate(lines, lay, first))
    labels = np.char.strip(texts[:, 0])
    slices = {name: np.char.strip(texts[:, 1 + i]) for i, name in enumerate(lay.slices)}
    return Chunk(first, features, labels, slices)


def _locate(lines: list[str], lay: Layout, first: int) -> str:
    """The first row and column numpy could not read, in words (the fast reader says less)."""
    width = len(lay.columns)
    number = first - 1
    for number, row in enumerate(_csv_rows(io.StringIO("".join(lines)), first), first):
        if len(row) != width:
            return f"row {number} has {len(row)} fields, the header has {width}"
        for i in lay.features:
            if not _numpy_reads(row[i]):
                return f"row {number}, column {lay.columns[i]!r}: {shown(row[i])} is not a number"
    return f"rows {first}..{number} cannot be read as CSV"  # (a row's quoted field may hold newlines)


def _numpy_reads(value: str) -> bool:
    """Whether numpy's reader takes ``value`` (a field, unquoted) as a number: Python's ``float`` takes more
    (``1_0``, digits of other scripts), so it alone would pass the value numpy refused."""
    try:
        float(value)
        np.loadtxt([value], delimiter=",", quotechar=None, comments=None, dtype=np.float64, ndmin=1)
    except ValueError:
        return False
    return True


def _open_npz(path: Path, label: str, slices: Sequence[str], chunk_rows: int) -> Holdout:
    import zipfile  # only an .npz needs it: a CSV's Job is a short process that does not import it

    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise BadInput(f"cannot read the dataset as .npz: {e}") from None
    with archive:
        names = list(archive.files)
        key = next((k for k in NPZ_FEATURES if k in names), None)
        if key is None:
            raise BadInput(f"the .npz has no feature array X (arrays: {', '.join(names)})")
        for name in (label, *slices):
            if name not in names:
                raise BadInput(f"array {name!r} is not in the .npz (arrays: {', '.join(names)})")
        x = _as_float(archive[key], key)
        if x.ndim != 2:
            raise BadInput(f"the .npz's feature array {key} must be 2-D (rows x features), not {list(x.shape)}")
        columns = {name: _shaped(archive[name], name, len(x)) for name in (label, *slices)}
    if len(x) == 0:
        raise BadInput("the dataset has no rows")

    def chunks(numeric_labels: bool) -> Iterator[Chunk]:
        # integers and float64 read the same as their text would (float32's text is a different float64)
        kind = columns[label].dtype
        as_numbers = numeric_labels and (kind.kind in "iu" or kind == np.float64)
        for start in range(0, len(x), chunk_rows):
            end = start + chunk_rows
            parts = {s: _text(columns[s][start:end]) for s in slices}
            values = columns[label][start:end]
            labels = values.astype(np.float64) if as_numbers else _text(values)
            if as_numbers and np.isnan(labels).any():
                labels = _text(values)  # the label check names NaN labels, as it does for text
            yield Chunk(start + 1, x[start:end], labels, parts)

    return Holdout(tuple(f"{key}[:, {i}]" for i in range(x.shape[1])), chunks, lambda: None)


def _as_float(values: npt.NDArray[Any], name: str) -> npt.NDArray[np.float64]:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadInput(f"the .npz's array {name} is not numeric ({values.dtype})") from None


def _shaped(values: npt.NDArray[Any], name: str, rows: int) -> npt.NDArray[Any]:
    if values.shape != (rows,):
        raise BadInput(f"the .npz's array {name} has shape {list(values.shape)}, the features have {rows} rows")
    return values


def _text(values: npt.NDArray[Any]) -> npt.NDArray[np.str_]:
    """An array's values as the text a CSV would hold (converted a chunk at a time)."""
    if values.dtype.kind == "f":  # keep integral floats as "3", not "3.0", so they meet integer class labels
        integral = np.isfinite(values) & (values == np.round(values))
        out = np.where(integral, np.char.mod("%d", np.where(integral, values, 0).astype(np.int64)), values.astype(str))
        return np.char.strip(out.astype(str))
    return np.char.strip(values.astype(str))
