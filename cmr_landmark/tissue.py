"""Landmarks of a fine stage's tissue map, by the rule the training labels were derived with.

The labels of every public set are derived from segmentations (:mod:`cmr_landmark.landmarks`): an RV insertion
point exists where the RV blood pool touches the LV myocardium, and a slice above the base or below the apex has
none. A heatmap peak judges that existence poorly (a faint RV at the apex, an outflow tract at the base); a fine
stage that also segments those tissues lets the Detector apply the labels' own rule to its own tissue map.
"""

from __future__ import annotations

import numpy as np
import torch

from .landmarks import DERIVE_BY_VIEW, STANDARD_LABELS


def tissue_landmarks(tissue_probabilities: torch.Tensor, view: str, pixel_mm: float) -> np.ndarray:
    """(N, K, 2) grid points (row, col), NaN where absent, of the landmark rule of ``view`` applied to the most
    probable tissue of each pixel of (N, C, S, S) probabilities over config.TISSUE_CLASSES on a ``pixel_mm`` grid."""
    labels = torch.as_tensor(tissue_probabilities).argmax(dim=1).numpy().astype(np.uint8)
    derive = DERIVE_BY_VIEW[view]
    return np.stack([derive(label_map, STANDARD_LABELS, (pixel_mm, pixel_mm)) for label_map in labels])
