"""Is there anything in an image for the detector to find? One answer for the gadget (each phase of a slice) and
for ``detect`` (a whole file), so that both refuse the same images with the same words.

The detector sees an image's magnitude in float32, with NaN and Inf set to 0 (``preprocess.to_magnitude``): an
image that is one value there, or a segmentation given in place of its image, would only give landmarks that mean
nothing.
"""

from __future__ import annotations

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)
# A segmentation holds a handful of label codes (ACDC 4 with the background, MyoPS 6); an MR image, even one stored in
# 8 bits, has hundreds of grey levels.
LABEL_MAP_MAX_VALUES = 8
# Pixels looked at before all of them are, to rule an image out cheaply (an image shows more than a few values in a
# sample this size; a sample of few values is followed by the exact check of every pixel).
LABEL_MAP_SAMPLE_PIXELS = 4096
# Smaller images are not judged: a few whole values in a handful of pixels tell nothing (a segmentation of a heart is
# at least this size at any pixel spacing a cardiac image has).
LABEL_MAP_MIN_IMAGE_PIXELS = 32 * 32


def no_signal_reason(image: np.ndarray) -> str | None:
    """Why ``image`` (any shape, real or complex) holds nothing for the detector, or None where it holds something:
    no finite pixel, or every finite pixel of one magnitude (as float32)."""
    if image.dtype.kind in "fc":
        magnitude = np.abs(image)  # float32 stays float32 (the gadget's planes): no copy in float64 per image
    else:  # integers: |int16 min| overflows in its own type
        magnitude = np.abs(image.astype(np.float64))
    usable = magnitude[np.isfinite(magnitude) & (magnitude <= FLOAT32_MAX)]
    if usable.size == 0:
        return "no finite pixel (all NaN, infinite or beyond float32's range)"
    low, high = usable.min(), usable.max()
    if np.float32(low) == np.float32(high):
        others = " (the others NaN, infinite or beyond float32's range)" if usable.size < magnitude.size else ""
        return f"no signal: every finite pixel has magnitude {low:g}{others}"
    return None


def label_map_reason(images: np.ndarray) -> str | None:
    """Why ``images`` (one image or a stack, rows and columns last) look like a segmentation given in place of an
    image (2 to :data:`LABEL_MAP_MAX_VALUES` whole numbers, in images of at least
    :data:`LABEL_MAP_MIN_IMAGE_PIXELS` pixels), or None."""
    if np.iscomplexobj(images) or images.ndim < 2 or images.shape[-2] * images.shape[-1] < LABEL_MAP_MIN_IMAGE_PIXELS:
        return None
    flat = images.reshape(-1)
    sample = flat[:: max(1, flat.size // LABEL_MAP_SAMPLE_PIXELS)]
    if len(np.unique(sample[np.isfinite(sample)])) > LABEL_MAP_MAX_VALUES:  # an image's grey levels, seen at once
        return None
    values = np.unique(flat[np.isfinite(flat)])
    # one value is a blank image, not a segmentation (no_signal_reason says why there is nothing to find)
    if not 2 <= len(values) <= LABEL_MAP_MAX_VALUES or np.any(values != np.round(values)):
        return None
    return f"holds only the values {', '.join(f'{v:g}' for v in values)}: a segmentation (label map), not an image"
