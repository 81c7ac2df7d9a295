"""All configuration in one place: landmark names, views, sequences, grids, thresholds, attribute names.

Units are in the names: ``*_mm`` is millimetres, ``*_px`` is pixels of the grid the name refers to.
Points are always (row, col) pixel coordinates of a 2-D array unless a name says otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# --- landmarks -------------------------------------------------------------------------------------------------

SAX_LANDMARKS: tuple[str, ...] = ("A-RVI", "P-RVI", "C-LV")
LAX_LANDMARKS: tuple[str, ...] = ("MV-1", "MV-2", "APEX")
LANDMARKS_BY_VIEW: dict[str, tuple[str, ...]] = {"sax": SAX_LANDMARKS, "lax": LAX_LANDMARKS}
ALL_LANDMARKS: tuple[str, ...] = SAX_LANDMARKS + LAX_LANDMARKS

VIEWS: tuple[str, ...] = ("sax", "lax")
SEQUENCES: tuple[str, ...] = ("cine", "lge", "t1")
# A model is trained for one of SEQUENCES or for "any" contrast (random per-tissue contrast: docs/t1.md); "any"
# is also what detection asks for when the contrast is unknown or none of SEQUENCES.
MODEL_SEQUENCES: tuple[str, ...] = SEQUENCES + ("any",)

# A left-right mirror of a short-axis image swaps the anterior and posterior RV insertion points,
# and swaps the two mitral points' order on a long-axis image.
MIRROR_SWAP: dict[str, tuple[int, ...]] = {"sax": (1, 0, 2), "lax": (1, 0, 2)}
# How a mirror-averaging model pools its two fine passes (manifest `mirror_pooling`): "mean" averages the
# probabilities; "log_linear" averages their logarithms and renormalises over the channels at each pixel (a
# log-linear opinion pool: probability survives only where both looks agree). Chosen per model on its training
# and validation splits (docs/t1.md, "Pooling the mirror passes").
MIRROR_POOLINGS: tuple[str, ...] = ("mean", "log_linear")


# --- the two-stage grid (coarse heart finding, then a fine pass on a crop) ------------------------------------


@dataclass(frozen=True)
class StageGrid:
    """A fixed sampling grid a network sees: ``size_px`` x ``size_px`` pixels of ``pixel_mm`` mm."""

    pixel_mm: float
    size_px: int
    sigma_px: float  # Gaussian sigma of the training heatmaps, in pixels of this grid

    @property
    def field_of_view_mm(self) -> float:
        return self.pixel_mm * self.size_px


# Coarse: whole image at 4 mm; 256 mm covers the heart wherever a planner put it. Fine: a 1.25 mm crop
# centred on the coarse estimate, big enough for the LV and RV insertion points (SAX) or the whole LV (LAX).
COARSE_GRID = StageGrid(pixel_mm=4.0, size_px=64, sigma_px=1.5)
DEFAULT_WIDTHS = (16, 32, 64, 128)  # U-Net channels per level (the coarse stage and the orientation network)
# Where the RV lies from the LV (degrees counter-clockwise from the viewer's right; display_orientation.
# rv_direction_deg) in the standard short-axis display a scanner header gives (anterior up, patient's right on the
# viewer's left): the orientation network put it at 117 degrees (median) on 22 real Kaggle DICOM frames, where the
# RV lies anterior and to the right of the LV. A model trained nearer another direction is shown the slice turned
# toward it (geometry.model_display_orientation; docs/orientation.md).
HEADER_DISPLAY_RV_DIRECTION_DEG = 120.0
# The short-axis orientation network (display_orientation) reads the anatomy around the heart on the coarse grid.
ORIENTATION_GRID = COARSE_GRID
# It decides a whole file from at most this many of its images, spread evenly over slices and phases: they share one
# storage, and a 30-phase file would cost 8 passes per image for nothing (5 s for 300 images, 0.75 s for 64).
ORIENTATION_MAX_IMAGES = 64
FINE_GRID_BY_VIEW: dict[str, StageGrid] = {
    "sax": StageGrid(pixel_mm=1.25, size_px=96, sigma_px=3.2),  # 120 mm
    "lax": StageGrid(pixel_mm=1.25, size_px=128, sigma_px=4.0),  # 160 mm
}

# A landmark whose peak softmax probability is below this is reported absent (slices outside the heart).
DEFAULT_PROBABILITY_THRESHOLD = 0.3

# The fine stage's points are the centre of mass of each map within this radius of its peak (heatmaps.
# decode_heatmaps), not the peak itself: the label scatter along the RV arc spreads the maps, and their centre of
# mass is nearer the labels. 15 mm (12 SAX fine-grid px, ~4 sigma; 3 sigma on the LAX grid, checked there on
# synthetic slices only) was chosen on the training splits (sax_cine
# 3.35 -> 3.30 mm, sax_lge 4.26 -> 4.14 mm over all labelled landmarks) and held on validation (docs/training.md,
# "Decoding"). New exports record it in the manifest; an entry without it decodes the peak.
FINE_CENTROID_RADIUS_MM = 15.0
# The long-axis fine stage looks for each landmark only this near its coarse point (lax_cine ships with it; docs/lax.md,
# "Coarse-guided fine search"); the short-axis models search their whole crop.
LAX_FINE_SEARCH_RADIUS_MM = 20.0
# The prefix of the ISMRMRD meta attributes the gadget writes on its copies (docs/gadget.md), which replay reads.
ATTRIBUTE_PREFIX = "CMRLandmark_"
# The one logger of everything the gadget logs (its connection, parameters, copies and passive server), so that a
# site's logging configuration (and Gadgetron's log) takes it under one name.
GADGET_LOGGER = "cmr_landmark.gadget"
# The ISMRMRD meta attribute Gadgetron marks an image's role with ("T1" map, "T1SD" map, ...); our copies carry ours
DATA_ROLE_META = "GADGETRON_DataRole"


# Pixel sizes an MR image can have (mm). Outside them a file's geometry is wrong (often a NIfTI in metres without its
# unit); below the lower bound the anti-aliasing filter alone would need gigabytes.
PLAUSIBLE_PIXEL_MM = (0.01, 100.0)

# --- where things live -----------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]


def models_dir() -> Path:
    """The folder holding ``manifest.json`` and the TorchScript files.

    ``CMR_LANDMARK_MODELS`` overrides; else the repository's ``models/`` (source checkout or editable install);
    else the copy installed under ``<prefix>/share/cmr-landmark/models`` (:func:`shipped_models_dir`).
    """
    override = os.environ.get("CMR_LANDMARK_MODELS")
    return Path(override) if override else shipped_models_dir()


def shipped_models_dir() -> Path:
    """The models that came with the project: the repository's ``models/`` (source checkout or editable install),
    else the copy installed under ``<prefix>/share/cmr-landmark/models``."""
    import sys

    in_repo = REPO_ROOT / "models"
    if (in_repo / "manifest.json").exists():
        return in_repo
    return Path(sys.prefix) / "share" / "cmr-landmark" / "models"


def data_root() -> Path:
    """The public data sets (``../shared/data`` beside the repository unless ``CMR_LANDMARK_DATA`` says)."""
    return Path(os.environ.get("CMR_LANDMARK_DATA", REPO_ROOT.parent / "shared" / "data"))


def cache_dir() -> Path:
    """Preprocessed training data and checkpoints (not committed)."""
    return Path(os.environ.get("CMR_LANDMARK_CACHE", REPO_ROOT / ".cache"))


# --- the gadget process ------------------------------------------------------------------------------------------


def prefer_passive_openmp_waits() -> None:
    """Make torch's OpenMP threads sleep, not spin, while they wait (``OMP_WAIT_POLICY=PASSIVE``), unless an
    OpenMP wait setting is already given. For the gadget process only; call before torch is imported (libgomp
    reads the variable once, when it is loaded).

    On a reconstruction host the cores are rarely idle: a thread that spins at every layer's barrier takes the
    core its sibling needs, and one preempted thread stalls every layer. Measured in docs/benchmarks.md (options).
    """
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

