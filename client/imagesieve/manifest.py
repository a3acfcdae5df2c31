"""Reading labelled image lists, shared by the client's ``add`` and the
server's labelled sources (the server depends on this package, never the
other way): the split folder names and a CSV manifest's rows."""
from __future__ import annotations

import csv
from pathlib import Path

#: Folder names (any case) that name a split, not a class.
SPLIT_NAMES = frozenset({"train", "val", "valid", "validation", "test"})


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """A CSV manifest's rows, column names stripped and lower-cased, cells
    as read ('' where a row is short). UTF-8, with or without the
    byte-order mark that spreadsheet programs write (which otherwise hides
    the first column's name); ValueError, naming the file, when it is not
    UTF-8 text or not CSV."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [{(k or "").strip().lower(): (v or "") for k, v in row.items()} for row in csv.DictReader(f)]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}): save the manifest as UTF-8") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV manifest ({e})") from None
