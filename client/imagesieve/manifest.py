"""Reading and writing labelled image lists, shared by the client's ``add``
and the server's labelled sources and commands (the server depends on this
package, never the other way): the split folder names, a CSV manifest's
rows, and cells a spreadsheet program will not run as formulas."""
from __future__ import annotations

import csv
import re
from pathlib import Path

#: Folder names (any case) that name a split, not a class.
SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "test"})


#: What a spreadsheet program reads as the start of a formula (OWASP's list).
FORMULA_STARTS = frozenset("=+-@\t\r")


# A plain signed number (-1, +2.5, -3e-4) is a value, not a formula. The
# report's page writes fix lists with the same rule (csvCell in its template).
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")   # ASCII digits, as JavaScript's \d


def _needs_apostrophe(s: str) -> bool:
    return s[:1] == "'" or (s[:1] != "" and s[:1] in FORMULA_STARTS and not _NUMBER.fullmatch(s))


def spreadsheet_cell(value) -> str:
    """``value`` as a CSV cell that a spreadsheet program shows as text and
    never runs: a text starting with ``= + - @``, a tab or a carriage return
    (a number such as -1 apart) gets a leading apostrophe, which spreadsheets
    hide and :func:`read_csv_rows` takes off again. A class folder named
    ``=HYPERLINK(...)`` otherwise became a live formula in a manifest or a
    fix list (a ninth probe). A text that starts with an apostrophe gets
    one more, so reading it back gives it whole."""
    s = "" if value is None else str(value)
    return "'" + s if _needs_apostrophe(s) else s


def from_spreadsheet_cell(s: str) -> str:
    """The value :func:`spreadsheet_cell` wrote (cells it did not change come
    back as they are)."""
    return s[1:] if s[:1] == "'" and _needs_apostrophe(s[1:]) else s


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """A CSV manifest's rows, column names stripped and lower-cased, cells
    as read ('' where a row is short), less the apostrophe that
    :func:`spreadsheet_cell` puts before a formula-like text. UTF-8, with or without the
    byte-order mark that spreadsheet programs write (which otherwise hides
    the first column's name); ValueError, naming the file, when it is not
    UTF-8 text or not CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [{(k or "").strip().lower(): from_spreadsheet_cell(v or "") for k, v in row.items()}
                    for row in csv.DictReader(f)]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}): save the manifest as UTF-8") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV manifest ({e})") from None
