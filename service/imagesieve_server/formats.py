"""Which image formats imagesieve decodes, and which files a folder walk
takes for images.

Pillow can open more formats than these, but each is attack surface (EPS
runs Ghostscript; ICNS decodes its pictures while opening, before any size
is known). A walk takes the files whose suffix Pillow registers for one of
``FORMATS``, and SVG drawings (``engine.vector``); files in image formats
that are not decoded (HEIC, JPEG XL, camera raw...) are counted and named
(:func:`skipped_note`), never dropped silently. The light client keeps a copy of ``IMAGE_SUFFIXES``
(``imagesieve.cli``; a test keeps the two equal).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from imagesieve.walk import files_under
from PIL import Image

Image.init()             # register every plugin, so the list below can name them
FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "DIB", "TIFF", "ICO", "PPM", "TGA",
                            "JPEG2000", "AVIF", "QOI", "PCX", "SGI", "DDS", "PSD") if f in Image.OPEN)
#: Drawings, rasterized by resvg (``engine.vector``); a server decodes them only with --decode-svg.
DRAWING_SUFFIXES = frozenset({".svg", ".svgz"})
IMAGE_SUFFIXES = frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in FORMATS) \
    | DRAWING_SUFFIXES
#: Formats Pillow identifies that are not pictures (data containers, video).
NOT_PICTURES = ("BUFR", "GRIB", "HDF5", "MPEG")
#: Picture files a walk names but does not take: every suffix of a format
#: Pillow opens that is not in FORMATS (XPM and XBM, Mac icons, Photo CD...:
#: derived, so none is dropped silently), and formats Pillow does not open.
UNREAD_IMAGE_SUFFIXES = (frozenset({".heic", ".heif", ".jxl", ".jxr", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf",
                                    ".rw2", ".raf", ".eps", ".xcf", ".pat", ".gih", ".kra", ".ora", ".psb", ".exr",
                                    ".hdr", ".emf", ".wmf"})
                         | {ext for ext, fmt in Image.registered_extensions().items()
                            if fmt in Image.OPEN and fmt not in FORMATS and fmt not in NOT_PICTURES}) - IMAGE_SUFFIXES


#: ``skipped`` key for image files whose names are not valid UTF-8 (an old
#: archive's Latin-1 names): every table, log and report holds paths as text.
BAD_NAME = "name not UTF-8"
#: ``skipped`` key for image files that are hidden (a name, or a folder's,
#: starting with "."; or under __MACOSX): thumbnail caches (.thumbnails)
#: would be duplicates of every picture, and the "._photo.jpg" files macOS
#: writes into archives are metadata, not images.
HIDDEN = "hidden"
#: ``skipped`` key for image names that are not regular files (a FIFO, a
#: device, a dangling link): never opened, since reading one could block.
NOT_REGULAR = "not a regular file"
#: ``skipped`` key for files under the audit's own --out (load_audit_table's ``exclude``).
OWN_OUTPUT = "under --out"
#: ``skipped`` key for folders that could not be opened (no permission, a path longer than the
#: system allows); one tuple key (UNWALKED, the first one, why) names it in the note.
UNWALKED = "folder not opened"


def hidden(path: Path, root: Path) -> bool:
    """Whether ``path`` (under ``root``) is hidden: see HIDDEN."""
    return any(hidden_name(part) for part in path.relative_to(root).parts)


def hidden_name(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def folders(root: Path, skipped: Counter | None = None) -> list[Path]:
    """The folders in ``root`` that are not hidden, sorted (class and split
    folders); the image files in hidden ones are counted under HIDDEN."""
    out = []
    for d in root.iterdir():
        if not d.is_dir():
            continue
        if not hidden_name(d.name):
            out.append(d)
        elif skipped is not None:
            skipped[HIDDEN] += sum(1 for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    return sorted(out)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def utf8_name(path: Path | str) -> bool:
    """Whether ``path`` is valid text (file names are bytes on Linux: the
    undecodable ones come back with surrogate escapes)."""
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def images_under(root: Path, skipped: Counter | None = None) -> list[Path]:
    """Image files under ``root`` (recursively, sorted); files in image
    formats that are not decoded are counted by suffix into ``skipped``,
    image files whose names are not valid UTF-8 under BAD_NAME, hidden ones
    under HIDDEN. Folders linked in are followed (a dataset's class folder
    is often a link to where its images live: ``rglob`` left them out without
    a word), each real folder once (``imagesieve.walk``)."""
    out = []
    unwalked: list[tuple[str, str]] = []
    for f, regular in files_under(root, unwalked):
        suffix = f.suffix.lower()
        if suffix in IMAGE_SUFFIXES and regular:
            why = HIDDEN if hidden(f, root) else None if utf8_name(f) else BAD_NAME
            if why is None:
                out.append(f)
            elif skipped is not None:
                skipped[why] += 1
        elif skipped is not None and suffix in UNREAD_IMAGE_SUFFIXES and regular and not hidden(f, root):
            skipped[suffix] += 1
        elif skipped is not None and suffix in IMAGE_SUFFIXES and not hidden(f, root):
            skipped[NOT_REGULAR] += 1        # a pipe, a device, a link to nothing: never opened
    if skipped is not None and unwalked:
        skipped[UNWALKED] += len(unwalked)
        if not any(isinstance(k, tuple) for k in skipped):
            skipped[(UNWALKED, *unwalked[0])] = 1      # the first one, named in the note
    return sorted(out)


def skipped_note(skipped: Counter) -> str | None:
    """One line for the user about files left out, or None."""
    formats = Counter({k: v for k, v in skipped.items()
                       if isinstance(k, str) and k not in (BAD_NAME, HIDDEN, NOT_REGULAR, OWN_OUTPUT, UNWALKED)})
    parts = []
    if formats:
        n = sum(formats.values())
        kinds = ", ".join(f"{k}: {v}" for k, v in formats.most_common())
        parts.append(f"{n} file{'s' if n != 1 else ''} left out: image formats imagesieve does not decode "
                     f"({kinds}); convert them (e.g. to PNG) to include them")
    if skipped.get(BAD_NAME):
        n = skipped[BAD_NAME]
        they, are = ("them", "their names are") if n != 1 else ("it", "its name is")
        parts.append(f"{n} image file{'s' if n != 1 else ''} left out: {are} not valid UTF-8; rename {they} "
                     f"(e.g. with convmv) to include {they}")
    if skipped.get(HIDDEN):
        n = skipped[HIDDEN]
        parts.append(f"{n} hidden image file{'s' if n != 1 else ''} left out (a name starting with '.', or under "
                     "__MACOSX: caches and archive metadata); list them in a manifest to include them")
    if skipped.get(NOT_REGULAR):
        n = skipped[NOT_REGULAR]
        parts.append(f"{n} image name{'s' if n != 1 else ''} left out: not {'a regular file' if n == 1 else 'regular files'} "
                     "(a pipe, a device or a link to nothing)")
    if skipped.get(UNWALKED):
        n = skipped[UNWALKED]
        first = next((k[1:] for k in skipped if isinstance(k, tuple)), None)
        parts.append(f"{n} folder{'s' if n != 1 else ''} could not be opened, {'its' if n == 1 else 'their'} images "
                     f"left out" + (f" (first: {first[0]}: {first[1]})" if first else ""))
    if skipped.get(OWN_OUTPUT):
        n = skipped[OWN_OUTPUT]
        parts.append(f"{n} file{'s' if n != 1 else ''} left out: under --out (an earlier audit's own thumbnails "
                     "and pages)")
    return "; ".join(parts) or None
