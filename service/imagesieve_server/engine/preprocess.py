"""RGB image -> model input, as the model manifest prescribes.

Resize so the shorter side fits ``input_size / crop_fraction``, keep the
centre ``input_size`` square (done as one resample with a source box), then
``(x - mean) / std`` in CHW float32. The two halves are separate so that an
executor can take the uint8 pixels and normalize on its device.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from imagesieve_models.manifest import ModelManifest


class Preprocessor:
    """Callable turning an RGB PIL image into a (3, S, S) float32 array."""

    def __init__(self, manifest: ModelManifest):
        if manifest.layout != "NCHW":
            raise ValueError(f"unsupported layout {manifest.layout!r} (only NCHW)")
        if not 0 < manifest.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {manifest.crop_fraction}")
        self.size = int(manifest.input_size)
        self.crop_fraction = float(manifest.crop_fraction)
        # Shorter side the decoder must deliver at least (JPEG draft bound).
        self.decode_min_size = int(round(self.size / self.crop_fraction))
        self._scale = (1.0 / np.asarray(manifest.std, np.float32)).reshape(3, 1, 1)
        self._shift = (np.asarray(manifest.mean, np.float32)).reshape(3, 1, 1)

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        side = min(width, height) * self.crop_fraction
        left, top = (width - side) / 2, (height - side) / 2
        return (left, top, left + side, top + side)

    def pixels(self, img: Image.Image) -> np.ndarray:
        """RGB image -> the model's input square, (S, S, 3) uint8 (HWC)."""
        if img.mode != "RGB":
            raise ValueError(f"expected an RGB image, got mode {img.mode}")
        box = self.crop_box(*img.size)
        return np.asarray(img.resize((self.size, self.size), Image.BILINEAR, box=box))

    def normalize(self, pixels: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(S, S, 3) uint8 -> (3, S, S) float32, ``(x - mean) / std``; into
        ``out`` (3, S, S) float32 when given (a row of a shared batch buffer)."""
        chw = pixels.transpose(2, 0, 1)
        if out is None:
            out = np.empty(chw.shape, np.float32)
        np.subtract(chw, self._shift, out=out, dtype=np.float32)
        np.multiply(out, self._scale, out=out)
        return out

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB image -> (3, S, S) float32 model input."""
        return self.normalize(self.pixels(img))
