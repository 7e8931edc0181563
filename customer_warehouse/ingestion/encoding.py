"""CSV bytes: detecting or applying the encoding, transcoding to UTF-8, line ends and line
numbers, all streamed (files can be gigabytes: never read whole). Reads the raw file; writes only
temporary copies the loader asks for.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from customer_warehouse.config import ENCODING_AUTO, encoding_variable
from customer_warehouse.ingestion.contract import (
    CHUNK_BYTES,
    HEAD_BYTES,
    RawDataError,
    SourceSpec,
)

# Auto-detected GB18030 must look like Chinese text (see _gb2312_share).
MIN_GB2312_SHARE = 0.8
ENCODING_LABELS = {"utf-8": "UTF-8", "utf-16": "UTF-16", "gb18030": "GB18030"}


@dataclass
class CsvPlan:
    """How one CSV file is read: decided before anything is loaded."""

    encoding: str  # a Python codec name; "utf-8" is read by DuckDB directly
    encoding_label: str  # for the log and the manifest: "UTF-8 with BOM", "GB18030", ...
    encoding_how: str  # "detected...", or "configured: <variable>..."
    delimiter: str
    columns: list[str]


def _label(encoding: str) -> str:
    return ENCODING_LABELS.get(encoding, encoding.upper())


def iconv_hint(path: Path, encoding: str = "<ENCODING>") -> str:
    return f"`iconv -f {encoding} -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}`"


def line_of_offset(data: bytes, offset: int, lines_before: int = 0) -> int:
    return lines_before + data.count(b"\n", 0, offset) + 1


@dataclass
class _Utf8Error:
    offset: int  # byte offset of the first byte that is not UTF-8
    line: int
    wide_before: bool  # UTF-8 text beyond Latin (e.g. Chinese) before it: a mixed file


_WIDE_CHARACTER = re.compile("[\u0800-\U0010ffff]")


def _check_utf8(path: Path) -> _Utf8Error | None:
    """Stream the whole file through a UTF-8 decoder (plain ASCII chunks are skipped fast)."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    fed = 0
    newlines = 0
    wide = False
    with path.open("rb") as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            fed += len(chunk)
            if chunk and chunk.isascii() and not decoder.getstate()[0]:
                newlines += chunk.count(b"\n")
                continue
            try:
                text = decoder.decode(chunk, not chunk)
            except UnicodeDecodeError as exc:
                before = exc.object[: exc.start]
                wide = wide or bool(_WIDE_CHARACTER.search(before.decode("utf-8", "ignore")))
                offset = fed - len(exc.object) + exc.start
                return _Utf8Error(offset, newlines + before.count(b"\n") + 1, wide)
            newlines += chunk.count(b"\n")
            wide = wide or bool(_WIDE_CHARACTER.search(text))
            if not chunk:
                return None


def choose_encoding(
    path: Path, spec: SourceSpec, head: bytes, setting: str
) -> tuple[str, str, str]:
    """(codec, label, how it was chosen) for a CSV file.

    Auto: a byte order mark decides; else the whole file is checked as UTF-8; a file that is
    not UTF-8 is GB18030 if its first bad byte comes before any UTF-8 text beyond Latin
    (transcoding then checks every byte as GB18030).
    """
    variable = encoding_variable(spec.name)
    if setting != ENCODING_AUTO:
        codec = "utf-8" if setting == "utf-8-sig" else setting
        label = _label(codec)
        if codec == "utf-8" and head.startswith(codecs.BOM_UTF8):
            label = "UTF-8 with BOM"
        return codec, label, f"configured: {variable} or CW_RAW_ENCODING"
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", "UTF-8 with BOM", "detected"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", "UTF-16", "detected from its byte order mark"
    error = _check_utf8(path)
    if error is None:
        return "utf-8", "UTF-8", "detected"
    if error.wide_before:
        raise RawDataError(
            f"{path.name}: line {error.line} (byte {error.offset}) is not valid UTF-8, but the "
            "lines before it hold UTF-8 text: the file mixes encodings (often rows appended "
            "by another program). Fix: re-export the file in one encoding, or convert the rows "
            f"from line {error.line} on (see them with `sed -n '{error.line}p' {path.name}`). "
            "Nothing was loaded."
        )
    share = _gb2312_share(path, error.offset)
    if share is not None and share < MIN_GB2312_SHARE:
        raise RawDataError(
            f"{path.name}: line {error.line} (byte {error.offset}) is not valid UTF-8, and "
            f"read as GB18030 only {share:.0%} of its non-ASCII characters from there on are "
            "common Chinese characters: the file is in another encoding (Latin-1 'très' "
            f"would read as 'tr鑣'). Fix: set {variable} to the file's encoding (for example "
            "cp1252, latin-1, big5, or gbk for traditional characters in a GBK export), or "
            f"convert it to UTF-8: {iconv_hint(path)}. Nothing was loaded."
        )
    return "gb18030", "GB18030", f"detected: not UTF-8 from line {error.line}"


def _gb2312_share(path: Path, offset: int) -> float | None:
    """Of the non-ASCII characters in 64 KB read as GB18030 from the line holding `offset`,
    the share that GB2312 (the common simplified characters) has; None when that sample does
    not decode (the transcoding reports the byte) or holds no such character.

    Real Chinese text scores above 0.95; Latin-1 or Big5 bytes that happen to decode as
    GB18030 land in its rare extension areas and score far lower."""
    with path.open("rb") as handle:
        handle.seek(max(0, offset - 4096))
        before = handle.read(min(offset, 4096))
        sample = before[before.rfind(b"\n") + 1 :] + handle.read(65536)
    try:
        text = codecs.getincrementaldecoder("gb18030")("strict").decode(sample, False)
    except UnicodeDecodeError:
        return None
    wide = [c for c in text if ord(c) > 127]
    if not wide:
        return None
    common = 0
    for character in wide:
        try:
            character.encode("gb2312")
            common += 1
        except UnicodeEncodeError:
            pass
    return common / len(wide)


def undecodable(path: Path, plan: CsvPlan, offset: int, line: int, variable: str) -> str:
    if plan.encoding_how.startswith("detected: not UTF-8"):
        what = "is neither UTF-8 nor GB18030, the encodings detected automatically"
        fix = (
            f"set {variable} to the file's encoding (for example big5, shift_jis, cp1252 or "
            "latin-1), or convert it to UTF-8"
        )
    else:
        what = f"is not valid {plan.encoding_label} ({plan.encoding_how})"
        fix = (
            f"set {variable} to the file's encoding (or to auto, to detect it), or convert "
            "it to UTF-8; the file may also mix encodings"
        )
    return (
        f"{path.name}: byte {offset} (line {line}) {what}. Fix: {fix}: {iconv_hint(path)} "
        "(`iconv -c` drops the bytes that do not convert). Nothing was loaded."
    )


def transcode(path: Path, plan: CsvPlan, target: Path, setting_variable: str) -> None:
    """Write `path`, decoded as `plan.encoding`, to `target` as UTF-8; stop on a bad byte."""
    decoder = codecs.getincrementaldecoder(plan.encoding)("strict")
    fed = 0
    newlines = 0
    first = True
    with path.open("rb") as source, target.open("wb") as sink:
        while True:
            chunk = source.read(CHUNK_BYTES)
            fed += len(chunk)
            try:
                text = decoder.decode(chunk, not chunk)
            except UnicodeDecodeError as exc:
                offset = fed - len(exc.object) + exc.start
                line = newlines + 1
                line += exc.object[: exc.start].decode(plan.encoding, "replace").count("\n")
                raise RawDataError(
                    undecodable(path, plan, offset, line, setting_variable)
                ) from None
            if first:
                text = text.removeprefix("\ufeff")
                first = False
            newlines += text.count("\n")
            sink.write(text.encode("utf-8"))
            if not chunk:
                return


def has_mixed_line_ends(path: Path) -> bool:
    """True when the file has CRLF and bare LF or CR line breaks (rows appended by another
    program, a file edited on two systems). Quoted values may hold either kind too, so this
    alone does not mean DuckDB cannot read the file (see `stage_csv`)."""
    crlf = bare_lf = bare_cr = 0
    carry = b""
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            data = carry + chunk
            # Keep a trailing CR for the next chunk: it may be the first half of a CRLF.
            carry = b"\r" if data.endswith(b"\r") else b""
            data = data[:-1] if carry else data
            pairs = data.count(b"\r\n")
            crlf += pairs
            bare_lf += data.count(b"\n") - pairs
            bare_cr += data.count(b"\r") - pairs
            if crlf and (bare_lf or bare_cr):
                return True
    bare_cr += len(carry)
    return bool(crlf and (bare_lf or bare_cr))


def normalize_line_ends(path: Path, target: Path) -> None:
    """Copy `path` to `target` with every CRLF and bare CR turned into LF (streamed)."""
    carry = b""
    with path.open("rb") as source, target.open("wb") as sink:
        while chunk := source.read(CHUNK_BYTES):
            data = carry + chunk
            carry = b"\r" if data.endswith(b"\r") else b""
            data = data[:-1] if carry else data
            sink.write(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        sink.write(carry.replace(b"\r", b"\n"))


def _line_break(path: Path) -> bytes:
    """b"\\n" (LF or CRLF line ends), or b"\\r" for a file whose lines end in CR only."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    return b"\r" if b"\r" in head and b"\n" not in head else b"\n"


def line_at(path: Path, offset: int) -> int:
    """The 1-based line number of the byte at `offset`."""
    line_break = _line_break(path)
    count = 0
    position = 0
    with path.open("rb") as handle:
        while position < offset:
            chunk = handle.read(min(CHUNK_BYTES, offset - position))
            if not chunk:
                break
            count += chunk.count(line_break)
            position += len(chunk)
    return count + 1


def _lines(path: Path) -> Iterator[bytes]:
    """The file's lines, each with its line break."""
    line_break = _line_break(path)
    with path.open("rb") as handle:
        if line_break == b"\n":
            yield from handle
            return
        rest = b""
        while chunk := handle.read(CHUNK_BYTES):
            *lines, rest = (rest + chunk).split(line_break)
            yield from (line + line_break for line in lines)
        if rest:
            yield rest


def blank_lines_before(path: Path, offsets: Sequence[int]) -> list[int]:
    """For each byte offset (ascending, each the start of a line): how many blank lines outside
    quoted values come before it. DuckDB numbers them like records but loads no row for them,
    so they shift the record numbers of the rows it rejects."""
    counts: list[int] = []
    if not offsets:
        return counts
    targets = iter(offsets)
    target = next(targets)
    position = 0
    blanks = 0
    in_quotes = False
    for line in _lines(path):
        while target is not None and target < position + len(line):
            counts.append(blanks)
            target = next(targets, None)
        if target is None:
            break
        if not in_quotes and not line.strip(b"\r\n"):
            blanks += 1
        if line.count(b'"') % 2:
            in_quotes = not in_quotes
        position += len(line)
    counts.extend(blanks for _ in range(len(offsets) - len(counts)))
    return counts
