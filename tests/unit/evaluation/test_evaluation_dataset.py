"""The holdout reader: chunks of a CSV add up to the file, quoted fields, blank lines, .npz, and the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlrollout_serving.evaluation import dataset
from mlrollout_serving.evaluation.dataset import Chunk, layout, open_holdout
from mlrollout_serving.evaluation.errors import BadInput, shown


def _all(chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    x = np.concatenate([c.features for c in chunks])
    y = np.concatenate([c.labels for c in chunks])
    s = {k: np.concatenate([c.slices[k] for c in chunks]) for k in chunks[0].slices}
    return x, y, s


def test_chunks_cover_the_file_in_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1001, 3))
    path = tmp_path / "h.csv"
    with path.open("w") as f:
        f.write('a,"quality",b,region,c\n')
        for i, row in enumerate(x):
            f.write(f'{float(row[0])!r},{i % 3},{float(row[1])!r},"north, east",{float(row[2])!r}\n')
            if i == 500:
                f.write("\n")  # a blank line is no row
    holdout = open_holdout(path, "csv", "quality", ["region"], chunk_rows=97)
    assert holdout.feature_names == ("a", "b", "c")
    chunks = list(holdout.chunks())
    assert [c.first_row for c in chunks[:3]] == [1, 98, 195] and sum(c.rows for c in chunks) == 1001
    features, labels, slices = _all(chunks)
    assert np.array_equal(features, x)
    assert labels.tolist() == [str(i % 3) for i in range(1001)]
    assert set(slices["region"].tolist()) == {"north, east"}


def test_npz(tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    np.savez(
        path, X=np.arange(12.0).reshape(6, 2), y=np.array([0.0, 1.0, 2.0, 1.0, 0.0, 1.5]), g=np.array(list("aabbcc"))
    )
    holdout = open_holdout(path, "npz", "y", ["g"], chunk_rows=4)
    chunks = list(holdout.chunks())
    assert [c.rows for c in chunks] == [4, 2] and holdout.feature_names == ("X[:, 0]", "X[:, 1]")
    _, labels, slices = _all(chunks)
    assert labels.tolist() == ["0", "1", "2", "1", "0", "1.5"]  # whole floats read as classes
    assert slices["g"].tolist() == list("aabbcc")


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"y": np.zeros(3)}, "no feature array X"),
        ({"X": np.zeros((3, 2))}, "array 'y' is not in the .npz"),
        ({"X": np.zeros(3), "y": np.zeros(3)}, "must be 2-D"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(4)}, r"has shape \[4\], the features have 3 rows"),
        ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "no rows"),
        ({"X": np.array([["a", "b"]]), "y": np.zeros(1)}, "is not numeric"),
    ],
)
def test_npz_problems(tmp_path: Path, arrays: dict[str, np.ndarray], words: str) -> None:
    path = tmp_path / "h.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(BadInput, match=words):
        list(open_holdout(path, "npz", "y", []).chunks())


def test_not_csv_and_not_npz(tmp_path: Path) -> None:
    binary = tmp_path / "h.csv"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(BadInput, match="not UTF-8 text"):
        list(open_holdout(binary, "csv", "y", []).chunks())
    with pytest.raises(BadInput, match=r"cannot read the dataset as \.npz"):
        open_holdout(binary, "npz", "y", [])
    with pytest.raises(BadInput, match="cannot read the dataset"):
        open_holdout(tmp_path / "absent.csv", "csv", "y", [])


def test_layout_errors() -> None:
    assert layout(["a", "y", "b"], "y", []).features == (0, 2)
    with pytest.raises(BadInput, match="repeats column 'a'"):
        layout(["a", "a", "y"], "y", [])
    with pytest.raises(BadInput, match="slice column 'g' is not in the dataset"):
        layout(["a", "y"], "y", ["g"])
    with pytest.raises(BadInput, match="no feature columns"):
        layout(["y", "g"], "y", ["g"])
    with pytest.raises(BadInput, match=r"column 4 of the dataset's header has no name \(a trailing ','\)"):
        layout(["a", "b", "y", ""], "y", [])
    with pytest.raises(BadInput, match=r"column 2 of the dataset's header has no name$"):
        layout(["a", " ", "y"], "y", [])


def test_a_spreadsheets_trailing_comma_is_named_not_read_as_a_feature(tmp_path: Path) -> None:
    exported = tmp_path / "export.csv"
    exported.write_text("a,b,y,\n1,2,0,\n3,4,1,\n")
    for whole in (0, 1 << 20):
        with pytest.raises(BadInput, match="column 4 of the dataset's header has no name"):
            list(open_holdout(exported, "csv", "y", [], whole_file_max_bytes=whole).chunks(True))


def _write(path: Path, x: np.ndarray, labels: list[str], segments: list[str], blank_at: tuple[int, ...] = ()) -> Path:
    with path.open("w") as f:
        f.write("a,b,quality,segment\n")
        for i, (row, label, segment) in enumerate(zip(x, labels, segments, strict=True)):
            f.write(f'{float(row[0])!r},"{float(row[1])!r}",{label},"{segment}"\n')
            if i in blank_at:
                f.write("\n" if i % 2 else "   \n")  # an empty line, and a line of spaces (the careful pass)
    return path


@pytest.mark.parametrize("numeric", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 7, 97, 1000, 5000])
def test_a_chunked_read_is_the_whole_file_read(tmp_path: Path, chunk_rows: int, numeric: bool) -> None:
    """1001 rows in chunks that divide it (7, 1) and that do not (97, 1000), quoted fields (a comma inside
    one), blank lines: the same features, labels and slices as one chunk of the whole file."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1001, 2))
    labels = [str(v) for v in rng.integers(0, 4, 1001)]
    segments = [f"s{v}, north" for v in rng.integers(0, 3, 1001)]
    path = _write(tmp_path / "h.csv", x, labels, segments, blank_at=(0, 96, 97, 500, 999))
    whole = list(open_holdout(path, "csv", "quality", ["segment"], chunk_rows=10_000).chunks(numeric))
    parts = list(open_holdout(path, "csv", "quality", ["segment"], chunk_rows=chunk_rows).chunks(numeric))
    assert len(whole) == 1 and whole[0].rows == 1001
    assert [c.first_row for c in parts] == list(np.cumsum([1] + [c.rows for c in parts[:-1]]))
    features, _, slices = _all(parts)
    assert np.array_equal(features, whole[0].features) and np.array_equal(features, x)
    assert slices["segment"].tolist() == segments
    # a chunk with a line of spaces went through the careful pass (text); its labels are the same numbers
    got = [v for c in parts for v in (c.labels.astype(np.float64) if numeric else c.labels).tolist()]
    assert got == ([float(v) for v in labels] if numeric else labels)
    if chunk_rows <= 97:  # chunks without a line of spaces: the fast pass read them
        assert any(c.labels.dtype == np.float64 for c in parts) == numeric


def test_numeric_labels_read_as_their_text_would(tmp_path: Path) -> None:
    """Labels read as numbers in the fast pass are the numbers their text gives (what the metrics did with
    the text); spellings the fast pass refuses (3_0, a NaN) go through the careful pass as text."""
    path = tmp_path / "h.csv"
    path.write_text('a,y\n1,3\n2,"4"\n3, 5.0 \n4,1e1\n5,0.1\n6,+7\n')
    (chunk,) = open_holdout(path, "csv", "y", []).chunks(numeric_labels=True)
    assert chunk.labels.dtype == np.float64
    assert chunk.labels.tolist() == [3.0, 4.0, 5.0, 10.0, 0.1, 7.0]
    path.write_text("a,y\n1,3\n2,3_0\n")
    (chunk,) = open_holdout(path, "csv", "y", []).chunks(numeric_labels=True)
    assert chunk.labels.tolist() == ["3", "3_0"]  # the careful pass: text, which the metric reads as 3 and 30


def test_many_blank_lines_do_not_end_the_holdout(tmp_path: Path) -> None:
    """A chunk of nothing but blank lines is skipped, not taken for the end of the file (streamed: read
    whole, the file is one chunk)."""
    path = tmp_path / "h.csv"
    path.write_text("a,y\n1,0\n" + "\n" * 25 + "2,1\n")
    holdout = open_holdout(path, "csv", "y", [], chunk_rows=10, whole_file_max_bytes=0)
    chunks = list(holdout.chunks(numeric_labels=True))
    assert [c.first_row for c in chunks] == [1, 2] and _all(chunks)[1].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("numeric", [True, False])
@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ("0.5,x,1,s", "row 738, column 'b': 'x' is not a number"),
        ("0.5,1,s", "row 738 has 3 fields, the header has 4"),
        ('0.5,"",1,s', "row 738, column 'b': '' is not a number"),
        # Python's float reads these, numpy's reader does not: still named, not "rows ... cannot be read"
        ("0.5,1_0,1,s", "row 738, column 'b': '1_0' is not a number"),
        ("1_000.5,1,1,s", "row 738, column 'a': '1_000.5' is not a number"),
        ("0.5,\u0661\u0662,1,s", "row 738, column 'b': '\u0661\u0662' is not a number"),
    ],
)
def test_a_bad_row_in_a_later_chunk_is_named(tmp_path: Path, numeric: bool, bad: str, words: str) -> None:
    """The bad row is the 738th data row (blank lines before it do not count), in the 8th chunk of 97."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(900, 2))
    path = _write(tmp_path / "h.csv", x, ["1"] * 900, ["s"] * 900, blank_at=(10, 11, 400))
    lines = path.read_text().splitlines(keepends=True)
    lines[1 + 737 + 3] = bad + "\n"  # after the header and three blank lines
    path.write_text("".join(lines))
    chunks = open_holdout(path, "csv", "quality", ["segment"], chunk_rows=97).chunks(numeric)
    with pytest.raises(BadInput, match=words):
        list(chunks)


def test_a_nan_label_in_a_later_chunk_reaches_the_label_check_as_text(tmp_path: Path) -> None:
    """The fast pass reads "nan" as a number; it hands the chunk to the careful pass, whose text the label
    check names (an empty label and a NaN one alike)."""
    path = tmp_path / "h.csv"
    path.write_text("a,y\n" + "1,0\n" * 150 + "1,NaN\n" + "1,1\n" * 10)
    chunks = list(open_holdout(path, "csv", "y", [], chunk_rows=100).chunks(numeric_labels=True))
    assert chunks[0].labels.dtype == np.float64 and chunks[1].labels.dtype.kind == "U"
    assert chunks[1].labels[50] == "NaN" and chunks[1].first_row == 101


def test_npz_numeric_labels_are_the_numbers_their_text_gives(tmp_path: Path) -> None:
    path = tmp_path / "h.npz"
    y64 = np.array([0.0, 1.0, 2.5, 1e-7, 3.0, -1.25])
    np.savez(path, X=np.zeros((6, 1)), y=y64, i=np.arange(6), f32=y64.astype(np.float32))
    for name in ("y", "i", "f32"):
        text = np.concatenate([c.labels for c in open_holdout(path, "npz", name, [], chunk_rows=4).chunks()])
        numbers = np.concatenate(
            [c.labels for c in open_holdout(path, "npz", name, [], chunk_rows=4).chunks(numeric_labels=True)]
        )
        assert np.array_equal(text.astype(np.float64), numbers.astype(np.float64)), name
    f32 = next(open_holdout(path, "npz", "f32", []).chunks(numeric_labels=True)).labels
    assert f32.dtype.kind == "U"  # float32's text is not float32's float64: kept as text, as before


TRICKY = {
    "quoted fields": 'a,b,y,g\n"1.5",2,0,"n, e"\n3,"-4e-3",1,"s"\n',
    "blank lines": "a,b,y,g\n\n1.5,2,0,n\n\n\n3,4,1,s\n\n",
    "no final newline": "a,b,y,g\n1.5,2,0,n\n3,4,1,s",
    "CRLF": "a,b,y,g\r\n1.5,2,0,n\r\n\r\n3,4,1,s\r\n",
    "CRLF, no final newline": "a,b,y,g\r\n1.5,2,0,n\r\n3,4,1,s",
    "CR only": "a,b,y,g\r1.5,2,0,n\r3,4,1,s\r",
    "label in the middle": "a,y,b,g\n1.5,0,2,n\n3,1,4,s\n",
    "label first, spaces": "y,a,b,g\n 0 , 1.5,2, n \n1,3 ,4,s\n",
    "text classes": "a,b,y,g\n1.5,2,cat,n\n3,4,dog,s\n0.1,0.2, cat ,s\n",
    "numbers every way": "a,b,y,g\n1e300,-0.0,2,n\n.5,5.,+3,s\n1E2,1e-5,1,s\n4.9e-324,1.7976931348623157e308,0,n\n",
    "newlines in quotes": 'a,b,y,g\n1.5,"2\n",0,"n\ne"\n3,4,"\n1","s\r\nw"\n0.1,0.2,"2","x"\n',
    "blanks in quotes": 'a,b,y,g\n1.5,2,0,"n\n\n   \ne"\n\n3,4,1,"s, ""w"""\n',
}


@pytest.mark.parametrize("numeric", [True, False])
@pytest.mark.parametrize("content", TRICKY.values(), ids=TRICKY.keys())
def test_the_fast_pass_reads_what_the_careful_pass_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, numeric: bool
) -> None:
    """Every chunk the fast pass reads, the careful pass reads the same: features bit for bit, labels (the
    fast pass's numbers are what the careful pass's text gives), slices, row numbers; in chunks of 1 and 2
    lines too (a chunk of blank lines only, a last line without its newline)."""
    path = tmp_path / "h.csv"
    path.write_bytes(content.encode())
    fast_reads = 0
    real_fast = dataset._parse_fast

    def counting(*args: object) -> Chunk | None:
        nonlocal fast_reads
        chunk = real_fast(*args)  # type: ignore[arg-type]
        fast_reads += chunk is not None
        return chunk

    for chunk_rows in (1, 2, 8192):
        monkeypatch.setattr(dataset, "_parse_fast", counting)
        fast = list(open_holdout(path, "csv", "y", ["g"], chunk_rows=chunk_rows).chunks(numeric))
        monkeypatch.setattr(dataset, "_parse_fast", lambda *_: None)
        careful = list(open_holdout(path, "csv", "y", ["g"], chunk_rows=chunk_rows).chunks(numeric))
        assert [(c.first_row, c.rows) for c in fast] == [(c.first_row, c.rows) for c in careful]
        for f, c in zip(fast, careful, strict=True):
            assert f.features.dtype == c.features.dtype == np.float64
            assert f.features.tobytes() == c.features.tobytes()  # -0.0 and the last bit included
            if f.labels.dtype == np.float64:
                assert f.labels.tolist() == [float(t) for t in c.labels.tolist()]
            else:
                assert f.labels.tolist() == c.labels.tolist()
            assert {k: v.tolist() for k, v in f.slices.items()} == {k: v.tolist() for k, v in c.slices.items()}
    # the fast pass read these (else the comparison says nothing), but for text asked for as numbers
    assert (fast_reads == 0) == (numeric and "cat" in content)


# Numeric holdouts without slices: the whole-file read's domain (a small file is parsed in one call, by path)
WHOLE = {
    "plain": "a,b,y\n1.5,2,0\n3,-4e-3,1\n",
    "quoted fields": 'a,b,y\n"1.5",2,0\n3,"-4e-3","1"\n',
    "blank lines": "a,b,y\n\n1.5,2,0\n\n\n3,4,1\n\n",
    "no final newline": "a,b,y\n1.5,2,0\n3,4,1",
    "CRLF": "a,b,y\r\n1.5,2,0\r\n\r\n3,4,1\r\n",
    "CR only": "a,b,y\r1.5,2,0\r3,4,1\r",
    "label in the middle": "a,y,b\n1.5,0,2\n3,1,4\n",
    "label first, spaces": "y,a,b\n 0 , 1.5,2\n1,3 ,4\n",
    "numbers every way": "a,b,y\n1e300,-0.0,2\n.5,5.,+3\n1E2,1e-5,1\n4.9e-324,1.7976931348623157e308,0\n",
    "a byte-order mark": "\ufeffa,b,y\n1.5,2,0\n",
    "a line of spaces": "a,b,y\n1.5,2,0\n   \n3,4,1\n",  # numpy refuses it: streamed
    "text classes": "a,b,y\n1.5,2,cat\n3,4,dog\n",  # the fast pass refuses text as numbers: streamed
    "a NaN label": "a,b,y\n1.5,2,0\n3,4,NaN\n",  # the stream's careful pass hands it on as text
    "an empty label": "a,b,y\n1.5,2,0\n3,4,\n",
    "newlines in quotes": 'a,b,y\n1.5,"2\n",0\n\n3,4,"\n1"\n5,6,"1\n\n"\n',
    "CRLF newlines in quotes": 'a,b,y\r\n1.5,"2\r\n",0\r\n3,4,1\r\n',
    "a quoted header": '"a","b ""x""",y\n1.5,2,0\n',
}
STREAMED = {"a line of spaces", "text classes", "a NaN label", "an empty label"}


def _read_both(
    path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int = 8192
) -> tuple[list[Chunk], list[Chunk], bool]:
    """The holdout read with the whole-file read allowed and with it off; and whether it was used."""
    whole_reads = 0
    real_fast = dataset._parse_fast

    def counting(lines: list[str] | Path, *args: object) -> Chunk | None:
        nonlocal whole_reads
        chunk = real_fast(lines, *args)  # type: ignore[arg-type]
        whole_reads += isinstance(lines, Path) and chunk is not None
        return chunk

    monkeypatch.setattr(dataset, "_parse_fast", counting)
    whole = list(open_holdout(path, "csv", "y", [], chunk_rows=chunk_rows).chunks(numeric_labels=True))
    streamed = list(
        open_holdout(path, "csv", "y", [], chunk_rows=chunk_rows, whole_file_max_bytes=0).chunks(numeric_labels=True)
    )
    return whole, streamed, whole_reads > 0


def _same(whole: list[Chunk], streamed: list[Chunk]) -> None:
    assert [(c.first_row, c.rows) for c in whole] == [(c.first_row, c.rows) for c in streamed]
    for w, s in zip(whole, streamed, strict=True):
        assert w.features.tobytes() == s.features.tobytes()  # -0.0 and the last bit (views: in row order)
        assert w.labels.dtype == s.labels.dtype and w.labels.tolist() == s.labels.tolist()


@pytest.mark.parametrize("content", WHOLE.values(), ids=WHOLE.keys())
def test_a_small_file_read_whole_is_the_streamed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    """The whole-file read gives the stream's chunks: values bit for bit, labels, row numbers; a file it
    refuses (a line of spaces, text or NaN labels) is streamed, with the same outcome as before."""
    path = tmp_path / "h.csv"
    path.write_bytes(content.encode())
    whole, streamed, used = _read_both(path, monkeypatch, chunk_rows=1)
    assert used == (content not in {WHOLE[k] for k in STREAMED})
    _same(whole, streamed)


@pytest.mark.parametrize("chunk_rows", [97, 1000, 8192])
def test_a_whole_file_is_handed_out_in_the_streams_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    """2,000 rows with blank lines: chunks of ``chunk_rows`` rows numbered as the stream numbers them (blank
    lines are no rows), the same values; each chunk a view of the one table, not a copy."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 3))
    lines = [
        f"{float(a)!r},{int(c)},{float(b)!r},{float(d)!r}\n"
        for (a, b, d), c in zip(x, rng.integers(0, 3, 2000), strict=True)
    ]
    path = tmp_path / "h.csv"
    path.write_text("a,y,b,d\n" + "".join(lines[:500]) + "\n\n" + "".join(lines[500:]))
    whole, streamed, used = _read_both(path, monkeypatch, chunk_rows)
    assert used and sum(c.rows for c in whole) == 2000
    assert np.array_equal(np.concatenate([c.features for c in whole]), x)
    if chunk_rows < 500:  # the stream's chunks end at lines, the whole file's at rows: the same where no blank
        _same(whole[:5], streamed[:5])  # line came before
    assert [c.first_row for c in whole] == list(range(1, 2001, chunk_rows))
    assert all(c.features.base is whole[0].features.base for c in whole)
    assert np.concatenate([c.labels for c in whole]).tolist() == np.concatenate([c.labels for c in streamed]).tolist()


BAD = {
    "a word": ("1.5,x,0", "row 3, column 'b': 'x' is not a number"),
    "an empty feature": ("1.5,,0", "row 3, column 'b': '' is not a number"),
    "1_0": ("1.5,1_0,0", "row 3, column 'b': '1_0' is not a number"),
    "too few fields": ("1.5,0", "row 3 has 2 fields, the header has 3"),
    "a quote inside a number": ('1.5,4"5,0', "row 3, column 'b': '4\"5' is not a number"),
    "a newline in a quoted number": ('1.5,"4\n5",0', "row 3, column 'b': '4\\n5' is not a number"),
    "a quoted delimiter": ('1.5,"4,5",0', "row 3, column 'b': '4,5' is not a number"),
}


@pytest.mark.parametrize(("line", "words"), BAD.values(), ids=BAD.keys())
def test_a_bad_row_reads_the_same_whole_or_streamed(tmp_path: Path, line: str, words: str) -> None:
    """numpy's own message for a whole file counts lines, not our data rows: the whole-file read hands a file
    it refuses to the stream, whose message names the row (blank lines do not count) and the column."""
    path = tmp_path / "h.csv"
    path.write_text(f"a,b,y\n1,2,0\n\n4,5,1\n{line}\n7,8,1\n")
    for limit in (dataset.WHOLE_FILE_MAX_BYTES, 0):
        with pytest.raises(BadInput) as raised:
            list(open_holdout(path, "csv", "y", [], whole_file_max_bytes=limit).chunks(numeric_labels=True))
        assert str(raised.value) == words, limit


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"a,y\n", "the dataset has a header but no rows"),
        (b"a,y\n\n\n", "the dataset has a header but no rows"),
        # past the header's first block of text: the stream's chunk of lines fails as a whole
        (b"a,y\n" + b"1,0\n" * 3000 + b"2,\xff\n", "the dataset is not UTF-8 text after row 0"),
    ],
)
def test_no_rows_and_not_utf8_read_the_same_whole_or_streamed(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "h.csv"
    path.write_bytes(content)
    for limit in (dataset.WHOLE_FILE_MAX_BYTES, 0):
        with pytest.raises(BadInput, match=f"^{words}$"):
            list(open_holdout(path, "csv", "y", [], whole_file_max_bytes=limit).chunks(numeric_labels=True))


def test_large_files_slices_and_compressed_names_are_streamed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the size limit, with a slice column (its text can take far more memory than its bytes), or under
    a name numpy's reader would decompress (a gzip CSV must be refused whatever its size), the file streams."""
    import gzip

    paths: list[Path] = []
    monkeypatch.setattr(
        dataset, "_parse_fast", lambda lines, *a: paths.append(lines) if isinstance(lines, Path) else None
    )
    path = tmp_path / "h.csv"
    path.write_text("a,y,g\n1,0,7\n2,1,8\n")
    list(open_holdout(path, "csv", "y", ["g"]).chunks(numeric_labels=True))
    list(open_holdout(path, "csv", "y", [], whole_file_max_bytes=path.stat().st_size - 1).chunks(numeric_labels=True))
    assert paths == []
    list(open_holdout(path, "csv", "y", [], whole_file_max_bytes=path.stat().st_size).chunks(numeric_labels=True))
    assert paths == [path]
    monkeypatch.undo()
    packed = tmp_path / "h.csv.gz"
    packed.write_bytes(gzip.compress(b"a,y\n1,0\n"))
    with pytest.raises(BadInput, match="not UTF-8 text"):
        list(open_holdout(packed, "csv", "y", []).chunks(numeric_labels=True))


# A row with more fields than the header: numpy reads only the columns asked for and ignores the rest, so
# without a count such a row was read from its first fields (in a 1-line chunk even at the wrong width)
LONG_AT = {"the first row": 1, "a middle row": 10, "the last line": 20, "a 1-row file": 0}
LONG_EXTRA = {"a number": ",9", "a trailing delimiter": ",", "a quoted delimiter": ',"9,9"', "two": ",9,9"}
ORDERS = {"label last": "abgy", "label first": "yabg", "label in the middle": "aybg"}


def _long_file(path: Path, order: str, at: int, extra: str, newline: str) -> Path:
    """20 data rows (1 if ``at`` is 0) of columns a, b, g (numbers) and the label y in ``order``, a blank
    line after the 4th; data row ``at`` (0: the only row) has ``extra`` fields after its last, no newline
    after the last line. A quoted feature elsewhere: a quote in the chunk is no long row."""
    rows = []
    for i in range(1, 21 if at else 2):
        values = {"a": f"{i}.5", "b": f'"-{i}"' if i == 2 else f"-{i}", "g": str(i % 3), "y": str(i % 2)}
        rows.append(",".join(values[c] for c in order) + (extra if i == max(at, 1) else ""))
        if i == 4:
            rows.append("")
    path.write_bytes((newline.join([",".join(order), *rows])).encode())
    return path


def _refusals(path: Path, rows: int) -> set[str]:
    """What every way of reading ``path`` says: numbers whole or streamed, numeric labels with a slice, text
    labels with and without one; in chunks of 1, 2 and 8,192 lines."""
    said: set[str] = set()
    for slices, numeric in (([], True), (["g"], True), ([], False), (["g"], False)):
        for limit in (dataset.WHOLE_FILE_MAX_BYTES, 0):
            for chunk_rows in (1, 2, 8192):
                holdout = open_holdout(path, "csv", "y", slices, chunk_rows=chunk_rows, whole_file_max_bytes=limit)
                with pytest.raises(BadInput) as raised:
                    assert sum(c.rows for c in holdout.chunks(numeric)) != rows, "read silently"
                said.add(str(raised.value))
    return said


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
@pytest.mark.parametrize("extra", LONG_EXTRA.values(), ids=LONG_EXTRA.keys())
@pytest.mark.parametrize("at", LONG_AT.values(), ids=LONG_AT.keys())
def test_a_row_longer_than_the_header_is_named_however_it_is_read(
    tmp_path: Path, at: int, extra: str, order: str, newline: str
) -> None:
    """The same words, naming the data row (blank lines are no rows) and both counts, whether the file is
    read whole or streamed, in chunks of one line or all of them, with the label anywhere, slices or not."""
    path = _long_file(tmp_path / "h.csv", order, at, extra, newline)
    fields = 4 + (2 if extra == ",9,9" else 1)
    assert _refusals(path, 20 if at else 1) == {f"row {max(at, 1)} has {fields} fields, the header has 4"}


@pytest.mark.parametrize("order", ORDERS.values(), ids=ORDERS.keys())
def test_the_same_file_without_the_long_row_is_read_by_the_fast_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    """The count lets plain rows by (a quoted field among them), and the fast pass reads them; a quoted
    delimiter is inside its field, which the count (the csv module's, then) tells from a field more."""
    path = _long_file(tmp_path / "h.csv", order, 10, "", "\n")
    whole, streamed, used = _read_both(path, monkeypatch, chunk_rows=1)
    assert used and sum(c.rows for c in whole) == 20
    _same(whole, streamed)
    slices = list(open_holdout(path, "csv", "y", ["g"], chunk_rows=3).chunks(False))
    assert [v for c in slices for v in c.slices["g"].tolist()] == [str(i % 3) for i in range(1, 21)]
    path.write_text(path.read_text().replace("3.5,", '3.5,"x, y",', 1))  # a quoted delimiter, one field more
    with pytest.raises(BadInput, match=r"^row 3 has 5 fields, the header has 4$"):
        list(open_holdout(path, "csv", "y", ["g"], chunk_rows=3).chunks(False))


def test_the_whole_file_budget_follows_the_containers_memory_limit(tmp_path: Path) -> None:
    """A Job given a small memory limit parses whole only what fits at worst (6 bytes a CSV byte beside its
    own 160 MiB); no limit, or none readable, gives the constant."""
    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert dataset.whole_file_budget([v2, v1]) == dataset.WHOLE_FILE_MAX_BYTES  # neither file
    v2.write_text("max\n")
    assert dataset.whole_file_budget([v2, v1]) == dataset.WHOLE_FILE_MAX_BYTES
    v2.write_text(f"{256 << 20}\n")
    assert dataset.whole_file_budget([v2, v1]) == (96 << 20) // 6  # 16 MiB: 96 MiB at worst
    v2.write_text(f"{1 << 30}\n")
    assert dataset.whole_file_budget([v2, v1]) == dataset.WHOLE_FILE_MAX_BYTES
    v2.write_text(f"{128 << 20}\n")
    assert dataset.whole_file_budget([v2, v1]) == 0  # below the Job's own peak: always stream
    v2.unlink()
    v1.write_text(f"{9223372036854771712}\n")  # cgroup v1's "no limit"
    assert dataset.whole_file_budget([v2, v1]) == dataset.WHOLE_FILE_MAX_BYTES


def _reference(content: str, slices: tuple[str, ...]) -> tuple[list[list[float]], list[str], dict[str, list[str]]]:
    """What RFC 4180 says the file holds (the csv module's reading of the whole text, blank rows left out):
    the features, the labels and the slices, stripped as the reader strips them."""
    import csv
    import io

    header, *rows = [r for r in csv.reader(io.StringIO(content, newline="")) if r and "".join(r).strip()]
    label, special = header.index("y"), {header.index(s) for s in slices}
    features = [[float(r[i]) for i in range(len(header)) if i != label and i not in special] for r in rows]
    return features, [r[label].strip() for r in rows], {s: [r[header.index(s)].strip() for r in rows] for s in slices}


def _spanning(rows: int, newline: str, seed: int) -> str:
    """``rows`` rows of two features, a text label (y) and a slice (g); about a third of the labels and
    slices quoted across lines (newlines, blank lines and lines of spaces, delimiters and doubled quotes
    inside), a quoted number across lines now and then, a blank line between rows here and there."""
    rng = np.random.default_rng(seed)
    out = ["a", ",", "y", ",", "g", newline]
    for i in range(rows):
        a = f'"{i}.5{newline}"' if rng.random() < 0.1 else f"{i}.5"
        label = rng.choice(["cat", f'"cat{newline}dog"', f'"c""at{newline}{newline}"', "dog", f'" cat {newline}"'])
        group = rng.choice(["n", f'"n, e{newline}   {newline}w"', '"s"', f'"{newline}s"'])
        out += [a, ",", str(label), ",", str(group), newline]
        if rng.random() < 0.05:
            out.append(newline)
    return "".join(out)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["LF", "CRLF"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 7, 8192])
def test_quoted_fields_across_lines_are_read_as_rfc_4180_says(tmp_path: Path, chunk_rows: int, newline: str) -> None:
    """A quoted field may hold newlines: a chunk that ends inside one takes the lines that close it (it was
    split there: the row's halves read as rows, silently when their field counts fit), a blank line inside
    one is part of the value, and the rows are numbered as rows, not lines; the fast pass and the careful
    pass (a line of spaces outside the quotes sends a chunk there) read the same."""
    content = _spanning(300, newline, seed=chunk_rows)
    path = tmp_path / "h.csv"
    for extra in ("", f"   {newline}"):  # a line of spaces between rows: the careful pass
        path.write_bytes((content + extra + f"9.5,cat,n{newline}").encode())
        features, labels, slices = _reference(content + f"9.5,cat,n{newline}", ("g",))
        chunks = list(open_holdout(path, "csv", "y", ["g"], chunk_rows=chunk_rows).chunks())
        assert [c.first_row for c in chunks] == list(np.cumsum([1] + [c.rows for c in chunks[:-1]]))
        x, y, s = _all(chunks)
        assert x.tolist() == features and y.tolist() == labels and s["g"].tolist() == slices["g"]
        assert "cat\ndog".replace("\n", newline) in labels and f"n, e{newline}   {newline}w" in slices["g"]


@pytest.mark.parametrize("chunk_rows", [1, 2, 8192])
def test_a_quoted_number_across_lines_reads_the_same_whole_or_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    """Numbers only (the whole read's case): numpy's whole read and the stream both read a quoted number
    with newlines around it as the number (the stream's chunks end at lines, the whole file's at rows)."""
    path = tmp_path / "h.csv"
    # a chunk of one line that ends inside "0 or "1 reads as a number: the chunk must still take the rest
    path.write_text(
        'a,b,y\n1.5,"\n2",0\n' + "3,4,1\n" * 5 + '5,"6\n\n",1\n7,8,"\n0"\n9,10,"0\n"\n11,12,"1\r\n\r\n"\n13,14,0\n'
    )
    whole, streamed, used = _read_both(path, monkeypatch, chunk_rows)
    assert used
    x = np.concatenate([c.features for c in whole])
    assert x.tobytes() == np.concatenate([c.features for c in streamed]).tobytes()
    assert [c.first_row for c in streamed] == list(np.cumsum([1] + [c.rows for c in streamed[:-1]]))
    labels = np.concatenate([c.labels for c in whole])
    assert labels.tolist() == np.concatenate([c.labels for c in streamed]).tolist() == [0] + [1] * 6 + [0, 0, 1, 0]
    assert x[:, 1].tolist() == [2.0, 4, 4, 4, 4, 4, 6, 8, 10, 12, 14]


def test_a_chunk_of_numbers_is_scanned_for_quotes_only_when_it_may_end_inside_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every field quoted (as some exporters write numbers): the fast pass read each chunk and the text after
    its last quote is a line end, so no chunk is read again by the csv module (2.4 times the time); a chunk
    whose last line leaves "1 open is, and takes the line that closes it."""
    scanned: list[int] = []
    real = dataset._finish_rows

    def counting(lines: list[str], *args: object) -> frozenset[int]:
        scanned.append(len(lines))
        return real(lines, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(dataset, "_finish_rows", counting)
    path = tmp_path / "h.csv"
    path.write_text('"a","b","y"\n' + '"1.5","2","0"\n' * 10)
    chunks = list(open_holdout(path, "csv", "y", [], chunk_rows=3, whole_file_max_bytes=0).chunks(True))
    assert scanned == [1] and sum(c.rows for c in chunks) == 10  # the header only
    path.write_text('a,b,y\n1.5,2,0\n1.5,2,"1\n"\n3,4,0\n')
    chunks = list(open_holdout(path, "csv", "y", [], chunk_rows=2, whole_file_max_bytes=0).chunks(True))
    assert scanned == [1, 2] and [c.rows for c in chunks] == [2, 1]
    assert np.concatenate([c.labels for c in chunks]).tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('a,b,y\n1,2,0\n3,4,"1\n', "row 2: a quoted field is not closed by the end of the file"),
        ('a,b,y\n1,2,0\n3,4,"1', "row 2: a quoted field is not closed by the end of the file"),
        ('a,b,y\n1,2,0\n\n3,4,"\n1\n\n', "row 2: a quoted field is not closed by the end of the file"),
        ('a,b,y\n1,2,0\n3,"4,1\n5,6,1\n', "row 2: a quoted field is not closed by the end of the file"),
        ('a,b,y\n1,2,0\n3,"4,1\n5",6,1\n7,8,0\n', "row 2 has 4 fields, the header has 3"),
        ('a,b,y\n1,2,0\n3,4,"' + "x\n" * 70_000 + '"\n',
         r"row 2: field larger than field limit \(131072\) \(a quoted field left open\?\)"),
        ('a,"b,y\n1,2,0\n', "the header: a quoted field is not closed by the end of the file"),
    ],
)  # fmt: skip
def test_a_quoted_field_left_open_is_named_by_its_row(tmp_path: Path, content: str, words: str) -> None:
    """Whole or streamed, numbers or text, in chunks of any size: a field still open at the end of the file
    (the whole read took ``...,"1`` for 1) or one past the csv module's field limit names the row where it
    opened; a quote that closes rows later makes one row of them, whose fields are counted."""
    path = tmp_path / "h.csv"
    path.write_text(content)
    for numeric in (True, False):
        for limit in (dataset.WHOLE_FILE_MAX_BYTES, 0):
            for chunk_rows in (1, 2, 8192):
                with pytest.raises(BadInput, match=f"^{words}$"):
                    holdout = open_holdout(path, "csv", "y", [], chunk_rows=chunk_rows, whole_file_max_bytes=limit)
                    list(holdout.chunks(numeric))


def test_the_whole_read_is_left_to_the_stream_when_the_file_may_end_in_a_quote(tmp_path: Path) -> None:
    """numpy's whole read would take a field open at the end for closed: a file whose text after its last
    quote is more than blanks, without a delimiter, streams (and one whose quotes close does not)."""
    path = tmp_path / "h.csv"
    for content, open_end in [
        ('a,y\n1,"2"\n', False),
        ('a,y\n1,"2"\n\n \n', False),
        ('a,y\n"1",2\n', False),
        ("a,y\n1,2\n", False),
        ('a,y\n1,"2\n', True),
        ('a,y\n1,"\n2', True),
        ('a,y\n1,"2"3\n', True),  # closed after all (3 runs on: 23), but streaming it costs nothing wrong
        ("a,y\n" + "1,2\n" * 20_000, False),  # no quote in the last 64 KiB, nor in the file
    ]:
        path.write_text(content)
        with path.open("rb") as f:
            assert dataset._open_at_end(f.fileno(), path.stat().st_size) == open_end, content[:30]
    path.write_text('a,y\n"1,2' + "3\n" * 40_000)  # no quote, no delimiter in the last 64 KiB: may be open
    with path.open("rb") as f:
        assert dataset._open_at_end(f.fileno(), path.stat().st_size)


def test_a_header_with_quoted_names_across_lines_streams_and_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quoted header name may hold a newline and a doubled quote; numpy's whole read skips one line for the
    header, so such a file streams, with the same rows."""
    path = tmp_path / "h.csv"
    path.write_text('"a\nx","b ""q""",y\n1.5,2,0\n3,4,1\n')
    whole, streamed, used = _read_both(path, monkeypatch)
    assert not used
    _same(whole, streamed)
    with open_holdout(path, "csv", "y", []) as holdout:
        assert holdout.feature_names == ("a\nx", 'b "q"')
    assert np.concatenate([c.features for c in whole]).tolist() == [[1.5, 2.0], [3.0, 4.0]]


def test_a_byte_order_mark_is_no_part_of_the_first_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spreadsheet's UTF-8 export starts with a byte-order mark: the first column is still found by its
    name (it was "\\ufeffy", and "label column 'y' is not in the dataset" showed an invisible difference)."""
    path = tmp_path / "h.csv"
    for content in ("\ufeffy,a,b\n0,1.5,2\n1,3,4\n", '\ufeff"y",a,b\r\n0,1.5,2\r\n1,3,4\r\n'):
        path.write_bytes(content.encode())
        whole, streamed, used = _read_both(path, monkeypatch)
        assert used
        _same(whole, streamed)
        assert np.concatenate([c.labels for c in whole]).tolist() == [0.0, 1.0]
        with open_holdout(path, "csv", "y", ["a"]) as holdout:
            assert holdout.feature_names == ("b",)
            (chunk,) = holdout.chunks()
        assert chunk.slices["a"].tolist() == ["1.5", "3"] and chunk.labels.tolist() == ["0", "1"]


def test_a_long_bad_value_is_quoted_in_part(tmp_path: Path) -> None:
    """A report's reason holds 2048 characters: a message quotes a value's first 100 (a 5,000-character
    feature made the report itself invalid, and the Job said "the evaluation broke", exit 3)."""
    assert shown("4\n5") == "'4\\n5'" and shown("x" * 100) == repr("x" * 100)
    assert shown("x" * 101) == f"{'x' * 100!r}... (101 characters)"
    path = tmp_path / "h.csv"
    path.write_text(f'a,b,y\n1,2,0\n1,"{"z" * 5000}\n",1\n')
    with pytest.raises(
        BadInput, match=rf"^row 2, column 'b': '{'z' * 100}'\.\.\. \(5,001 characters\) is not a number$"
    ):
        list(open_holdout(path, "csv", "y", []).chunks(numeric_labels=True))


_LONG = "x" * 140_000  # past the csv module's field limit (131072 characters)
_PAST_LIMIT = r"field larger than field limit \(131072\) \(a quoted field left open\?\)"


@pytest.mark.parametrize(
    ("content", "slices", "numeric", "words"),
    [
        (f'a,y,s\n1,0,"{_LONG}"\n', ["s"], (True, False), f"row 1: {_PAST_LIMIT}"),
        (f'a,y,s\n1,0,2\n3,1,"{_LONG}"\n', ["s"], (True, False), f"row 2: {_PAST_LIMIT}"),
        (f'a,y\n1,"{_LONG}"\n', [], (False,), f"row 1: {_PAST_LIMIT}"),
        (f'a,y\n1,"{_LONG}', [], (True, False), "row 1: a quoted field is not closed by the end of the file"),
        (f'a,y\n1,0\n2,"{_LONG}\n', [], (True, False), "row 2: a quoted field is not closed by the end of the file"),
        (f'a,y\n1,{_LONG}\n2,"b"\n', [], (False,), f"row 1: {_PAST_LIMIT}"),
        (f'a,y\n2,"b"\n1,{_LONG}\n', [], (False,), f"row 2: {_PAST_LIMIT}"),
        (f'a,y\n{"1" * 140_000},0\n2,"1"\n', [], (False,), f"row 1: {_PAST_LIMIT}"),
        (f"{'h' * 140_000},y\n1,0\n", [], (True, False), f"the header: {_PAST_LIMIT}"),
    ],
)  # fmt: skip
def test_a_field_past_the_csv_limit_is_named_by_its_row_whatever_the_chunks(
    tmp_path: Path, content: str, slices: list[str], numeric: tuple[bool, ...], words: str
) -> None:
    """A field longer than the csv module's limit in a column read as text (a label or a slice), or in a chunk
    the csv module reads, names its row (it raised the csv module's own error: "the evaluation broke", exit 3),
    whether the chunk holds a quote or not (the answer must not depend on where chunks end); one still open
    at the end of the file is named as open."""
    path = tmp_path / "h.csv"
    path.write_text(content)
    for labels in numeric:
        for limit in (dataset.WHOLE_FILE_MAX_BYTES, 0):
            for chunk_rows in (1, 2, 3, 8192):
                with pytest.raises(BadInput, match=f"^{words}$"):
                    holdout = open_holdout(path, "csv", "y", slices, chunk_rows=chunk_rows, whole_file_max_bytes=limit)
                    list(holdout.chunks(labels))


def test_a_long_number_is_read_alike_in_chunks_of_any_size(tmp_path: Path) -> None:
    """Every column a number: numpy reads a number of any length, and the csv module is never asked, so a
    140,000-digit feature reads in chunks of any size, quotes or not (the same rows each time)."""
    path = tmp_path / "h.csv"
    path.write_text(f'a,y\n{"0" * 140_000}1,0\n2,"1"\n')
    for limit in (dataset.WHOLE_FILE_MAX_BYTES, 0):
        for chunk_rows in (1, 2, 8192):
            holdout = open_holdout(path, "csv", "y", [], chunk_rows=chunk_rows, whole_file_max_bytes=limit)
            chunks = list(holdout.chunks(True))
            assert np.concatenate([c.features for c in chunks]).tolist() == [[1.0], [2.0]]
            assert np.concatenate([c.labels for c in chunks]).tolist() == [0.0, 1.0]


def test_ends_open_reads_quotes_as_the_csv_module_does() -> None:
    for text, open_end in [
        ('1,"x', True), ('1,"x""', True), ('1,"x"""', False), ('1,"a\nb"', False), ('1,"a"b,"', True),
        ('1,4"5', False), ('1,"a"b"c', False), ("1,2\n", False), ('"', True), ("", False), ('1,"a\r\n', True),
    ]:  # fmt: skip
        assert dataset._ends_open(text) == open_end, text
