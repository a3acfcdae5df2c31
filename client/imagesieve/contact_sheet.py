"""A contact sheet: a grid of thumbnails, each with a few caption lines
(e.g. given label, suggested label, score). Pillow only.

    sheet = render_contact_sheet([SheetItem(path, ["given: cat", "suggested: dog 0.91"])])
    sheet.save("suspects.png")
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .orientation import upright
from .seen import as_seen

LINE_H = 12
PAD = 6


@dataclasses.dataclass
class SheetItem:
    image: "Image.Image | str | Path | bytes"   # a PIL image, a file path, or encoded bytes
    lines: Sequence[str] = ()                     # caption lines under the thumbnail


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image))
    return Image.open(image)


def _thumbnail(image, size: int) -> Image.Image:
    try:
        im = as_seen(upright(_open(image)))      # transparency as the server composites it
    except Exception:  # noqa: BLE001 - an unreadable image becomes a grey tile
        return Image.new("RGB", (size, size), (160, 160, 160))
    scale = size / max(im.size)
    # Upscale tiny images (e.g. 28x28) with NEAREST so pixels stay visible.
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
    tile = Image.new("RGB", (size, size), (255, 255, 255))
    tile.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return tile


def _font(size: int = 10):
    """A scalable font that draws accented and most non-Latin names: DejaVu
    Sans where the system has one, else Pillow's own FreeType default. Pillow's
    old bitmap default drew every letter outside ASCII as a box ("Ankle b□□t",
    a class "animaux □□")."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)      # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def one_line(text: str) -> str:
    """``text`` with its control characters (a newline in a file name)
    escaped: a caption or an output line stays one line (and Pillow cannot
    measure multiline text)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    text = one_line(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def render_contact_sheet(items: Sequence[SheetItem], columns: int = 6, thumb: int = 128,
                         title: str | None = None) -> Image.Image:
    """An RGB image: ``columns`` thumbnails of ``thumb`` px per row, captions below each."""
    if columns < 1 or thumb < 16:
        raise ValueError("columns must be >= 1 and thumb >= 16 px")
    font = _font()
    n_lines = max((len(it.lines) for it in items), default=0)
    cell_w, cell_h = thumb + 2 * PAD, thumb + 2 * PAD + n_lines * LINE_H
    rows = max(1, -(-len(items) // columns))
    top = (LINE_H + 2 * PAD) if title else 0
    sheet = Image.new("RGB", (columns * cell_w, top + rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((PAD, PAD), _fit(draw, title, font, sheet.width - 2 * PAD), fill=(0, 0, 0), font=font)
    for k, it in enumerate(items):
        x, y = (k % columns) * cell_w + PAD, top + (k // columns) * cell_h + PAD
        sheet.paste(_thumbnail(it.image, thumb), (x, y))
        for j, line in enumerate(it.lines):
            draw.text((x, y + thumb + 1 + j * LINE_H), _fit(draw, line, font, thumb), fill=(0, 0, 0), font=font)
    return sheet


def save_contact_sheet(items: Sequence[SheetItem], path: str | Path, **kwargs) -> Path:
    """Render and save (format from the suffix, e.g. .png); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_contact_sheet(items, **kwargs).save(path)
    return path
