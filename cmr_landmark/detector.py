"""Landmark detection on 2-D images: preprocess -> coarse model -> crop -> fine model -> decode -> image pixels.

Usable on its own (offline CLI, evaluation) and by the gadget. Points come back in pixels of the image as given
(row, col); geometry (mm, patient coordinates) is the caller's business (see :mod:`cmr_landmark.geometry`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import LAX_LANDMARKS, MIRROR_POOLINGS, MIRROR_SWAP, StageGrid
from .geometry import circular_mean_deg, midpoint_direction_deg, orient_image, oriented_spacing_mm, points_to_original
from .heatmaps import decode_heatmaps
from .model_store import ModelSpec, load_torchscript
from .preprocess import GridTransform, grid_transform, normalise_stack, preprocess, resample_stack


@dataclass(frozen=True)
class Landmark:
    """A detected landmark in pixels of the input image (row, col) with its peak softmax probability."""

    row: float
    col: float
    probability: float


ImageLandmarks = dict[str, Landmark | None]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


BF16_ENVIRONMENT_VARIABLE = "CMR_LANDMARK_BF16"  # "1" / "0" forces bf16 autocast on / off on the CPU


@functools.cache
def bf16_faster_on_cpu() -> bool:
    """Whether bf16 autocast runs our U-Nets faster than fp32 on this CPU (decided once per process).

    oneDNN's "bf16 supported" is not enough. Measured: with AMX, bf16 autocast made the U-Nets 3.6-3.9x faster
    (reported in the project's developers' guide, not rerun here); on the AVX512-BF16 AMD EPYC of the first session
    2x faster (docs/benchmarks.md); on an Intel Xeon with AVX512-BF16 and no AMX 1.4x slower (a training step 0.052
    against 0.037 s per image, docs/training.md). So: AMX, or AMD with AVX512-BF16 (:func:`bf16_pays_on`). Timing
    both at start-up was tried and rejected: under a busy host's load it chose differently from one process to the
    next, and bf16 moves the points by ~0.1 mm, so evaluations stopped being repeatable. ``CMR_LANDMARK_BF16`` = 1
    or 0 overrides (``benchmarks/training_speed.py`` with either setting tells which is faster on a new CPU).
    """
    forced = os.environ.get(BF16_ENVIRONMENT_VARIABLE)
    if forced in ("0", "1"):
        return forced == "1"
    if forced is not None:
        warnings.warn(f"{BF16_ENVIRONMENT_VARIABLE}={forced!r} is neither 0 nor 1; deciding from the CPU", stacklevel=2)
    try:
        supported = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):
        return False
    return bool(supported) and bf16_pays_on(*cpu_vendor_and_flags())


def bf16_pays_on(vendor: str, flags: frozenset[str]) -> bool:
    """The measured table of :func:`bf16_faster_on_cpu`: AMX, or an AMD CPU with AVX512-BF16."""
    return "amx_bf16" in flags or (vendor == "AuthenticAMD" and "avx512_bf16" in flags)


def cpu_vendor_and_flags(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    """This CPU's vendor id and feature flags ("" and none where the file is missing, e.g. not Linux)."""
    try:
        return parse_cpuinfo(cpuinfo_path.read_text())
    except OSError:
        return "", frozenset()


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """Vendor id and feature flags of the first processor listed in a Linux /proc/cpuinfo text."""
    first_processor = text.split("\n\n", 1)[0]
    fields = {key.strip(): value.strip() for key, value in
              (line.split(":", 1) for line in first_processor.splitlines() if ":" in line)}
    return fields.get("vendor_id", ""), frozenset(fields.get("flags", "").split())


class Detector:
    """Runs one manifest model on batches of 2-D images.

    ``optimised`` (default) is the fast path measured in docs/benchmarks.md: the stack normalised once for both
    stages and resampled as a whole (:func:`preprocess.resample_stack`), and bf16 autocast on CPUs with native
    bf16 (fp16 on a GPU). ``optimised=False`` is the reference the fast path is checked against
    (tests/test_fast_path.py, benchmarks/run_benchmarks.py): :func:`preprocess.preprocess` per image and stage,
    the steps training takes (``augment.sample_on_grid``), and fp32 inference. Both run in the layout the file's
    weights were frozen in (channels-last since 2026-12-05, ``export.freeze_cascade``).

    ``mirror_average`` (default: the manifest's value for the model): the fine stage also sees its crop mirrored
    left-right, and its heatmaps, mirrored back with the handed landmarks swapped (``config.MIRROR_SWAP``), are
    averaged with the direct ones before decoding, as ``spec.mirror_pooling`` says (``config.MIRROR_POOLINGS``).
    The models are trained with mirrored copies, so the two passes are two looks at the same anatomy; averaging
    them halves the fine stage's speed and removes part of its variance (docs/training.md, "Mirror averaging").

    ``spec.fine_search_radius_mm`` (the manifest's; None = off): the fine stage looks for each landmark
    only within this distance of where the coarse stage found it (when the coarse peak reaches
    ``COARSE_GUIDE_PROBABILITY``). The coarse stage sees the whole field of view and so the whole chest; the fine
    stage sees a crop (long axis: 160 mm) in which an atrium can look like a ventricle, and the window keeps it from
    answering with the wrong chamber (docs/lax.md, "Coarse-guided fine search").

    ``spec.fine_centroid_radius_mm`` (the manifest's; None = the peak): each fine point is the centre of mass of
    its map within this distance of the peak (:func:`heatmaps.decode_heatmaps`).
    """

    def __init__(self, spec: ModelSpec, device: torch.device | None = None, use_bf16: bool | None = None,
                 optimised: bool = True, mirror_average: bool | None = None) -> None:
        self.spec = spec
        self.device = device or default_device()
        self.model = load_torchscript(spec, self.device)
        self.optimised = optimised
        self.mirror_average = spec.mirror_average if mirror_average is None else mirror_average
        if use_bf16 is None:
            use_bf16 = optimised and self.device.type == "cpu" and bf16_faster_on_cpu()
        self.use_bf16 = use_bf16
        self.warmed_up = False

    def warm_up(self, images_per_call: int = 1) -> None:
        """One detection on made-up images (once per Detector), so that the first real call does not pay for
        building the kernels, which are built per batch shape: ``images_per_call`` as the first real call will have
        (a cine slice's phases). On the 2-core AMD EPYC (bf16) a LAX cine's first call took 198 ms against 95-130
        ms for the next ones, 99 ms after a warm-up of its shape; a SAX stack's 247 against 141-161 ms, 180 ms
        after a warm-up of one image."""
        if self.warmed_up:
            return
        images = np.random.default_rng(0).random((max(1, images_per_call), 128, 128), dtype=np.float32)
        self.detect(images, (1.5, 1.5), same_slice=images_per_call > 1)
        self.warmed_up = True

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.device.type == "cuda" and self.optimised:
            return torch.autocast("cuda", dtype=torch.float16)
        if self.use_bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_stage(self, stage: str, batch: np.ndarray) -> torch.Tensor:
        """Softmax heatmaps (N, K+1, S, S) on the CPU of the ``stage`` ('coarse' or 'fine') network for (N, S, S)
        grid images."""
        x = torch.from_numpy(batch[:, None]).to(self.device)  # 1 channel: NCHW and channels-last are one tensor
        with torch.inference_mode(), self._autocast():
            if stage == "coarse":
                return self.model.coarse_probabilities(x).float().cpu()
            return self.model.fine_probabilities(x).float().cpu()

    def fine_probabilities(self, fine_inputs: np.ndarray) -> torch.Tensor:
        """The fine stage's heatmaps of (N, S, S) crops, averaged with those of the mirrored crops when
        ``mirror_average``."""
        probabilities = self.run_stage("fine", fine_inputs)
        if not self.mirror_average:
            return probabilities
        mirrored = self.run_stage("fine", np.ascontiguousarray(fine_inputs[:, :, ::-1]))
        return pool_mirror_passes(probabilities, mirrored_back(mirrored, self.spec.view), self.spec.mirror_pooling)

    def detect(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        pixel_spacing_mm: tuple[float, float],
        same_slice: bool = False,
        probability_threshold: float | None = None,
    ) -> list[ImageLandmarks]:
        """Landmarks of each 2-D image (all of one shape and spacing, e.g. the phases of a slice), as given.

        A short-axis model was trained on the standard display (anterior up, the RV on the viewer's left, turned
        toward the manifest's ``display_rv_direction_deg``): an image stored otherwise comes back less accurate,
        and mirrored with A-RVI and P-RVI swapped. :func:`detect_in_orientation` shows the images turned and
        mirrored and maps the points back; ``offline_detection.detect_series`` decides how from a file.

        ``same_slice``: the images are phases of one slice, so the fine crop is centred once for all of them
        (median of the coarse estimates), which keeps the points of a cine steady.

        A long-axis model that records ``display_long_axis_deg`` (the apex-to-mitral direction of the real frames it
        was trained on) runs twice: the first pass finds apex and mitral valve in the images as given, the second
        sees each image turned, inside the network grids, so that this direction is the recorded one, where the
        model is at its best (docs/lax.md, arm C). A cine slice is turned once, by the circular mean of its phases.
        """
        if probability_threshold is not None and not 0.0 <= probability_threshold <= 1.0:  # NaN included
            raise ValueError(f"probability_threshold must be in [0, 1], got {probability_threshold}")
        shapes = {np.shape(image) for image in images}
        if len(shapes) > 1:
            raise ValueError(f"images of one shape expected, got {sorted(shapes)}")
        stack = np.stack([np.asarray(image) for image in images]) if len(images) else np.zeros((0, 2, 2))
        if stack.ndim != 3:
            raise ValueError(f"expected a sequence of 2-D images, got array of shape {stack.shape}")
        if len(stack) == 0:
            return []
        threshold = self.spec.probability_threshold if probability_threshold is None else probability_threshold
        # Fast path: normalise once for both stages (the reference path normalises per stage, as training does).
        normalised = normalise_stack(stack) if self.optimised else None
        rotations = np.zeros(len(stack))
        target_deg = self.spec.display_long_axis_deg
        if target_deg is not None:
            first = self._detect(stack, normalised, pixel_spacing_mm, same_slice, 0.0, rotations)
            found_deg = np.array([long_axis_direction_deg(lax_points_rc(found), pixel_spacing_mm) for found in first])
            found_deg = np.where(np.isfinite(found_deg), found_deg, target_deg)
            if same_slice:
                found_deg[:] = circular_mean_deg(found_deg)
            # a grid shows the anatomy turned clockwise by its rotation: from the found direction to the target
            rotations = np.radians(found_deg - target_deg)
        return self._detect(stack, normalised, pixel_spacing_mm, same_slice, threshold, rotations)

    def _detect(self, stack: np.ndarray, normalised: np.ndarray | None, pixel_spacing_mm: tuple[float, float],
                same_slice: bool, threshold: float, rotations: np.ndarray) -> list[ImageLandmarks]:
        """One pass of both stages, each image's grids turned by its ``rotations`` (radians)."""
        coarse_points, coarse_peak = self._coarse_landmarks(stack, normalised, pixel_spacing_mm, rotations)
        centres = crop_centres(coarse_points, coarse_peak)
        if same_slice:
            centres[:] = np.median(centres, axis=0)
        fine_inputs, transforms = self._grid_inputs(stack, normalised, pixel_spacing_mm, self.spec.fine_grid, centres,
                                                    rotations)
        probabilities = self.fine_probabilities(fine_inputs)
        if self.spec.fine_search_radius_mm is not None:
            probabilities = restrict_to_coarse_windows(probabilities, coarse_points, coarse_peak, transforms,
                                                       self.spec.fine_search_radius_mm / self.spec.fine_grid.pixel_mm)
        centroid_radius_mm = self.spec.fine_centroid_radius_mm
        points_grid, peak = decode_heatmaps(
            probabilities, None if centroid_radius_mm is None else centroid_radius_mm / self.spec.fine_grid.pixel_mm)
        results: list[ImageLandmarks] = []
        for points, peaks, transform in zip(points_grid, peak, transforms, strict=True):
            image_points = transform.grid_to_image(points)
            results.append(
                {
                    name: Landmark(float(rc[0]), float(rc[1]), float(p)) if p >= threshold else None
                    for name, rc, p in zip(self.spec.landmarks, image_points, peaks, strict=True)
                }
            )
        return results

    def _grid_inputs(self, stack: np.ndarray, normalised: np.ndarray | None, pixel_spacing_mm: tuple[float, float],
                     grid: StageGrid, centres: np.ndarray | None, rotations: np.ndarray | None = None
                     ) -> tuple[np.ndarray, list[GridTransform]]:
        """The (N, S, S) network inputs of one stage and their transforms; ``centres`` None: image centres;
        ``rotations`` (radians per image) None: none."""
        centre_list = [None] * len(stack) if centres is None else [tuple(c) for c in centres]
        rotations = np.zeros(len(stack)) if rotations is None else rotations
        if normalised is None:
            inputs, transforms = zip(*(preprocess(image, pixel_spacing_mm, grid, centre_rc=centre, rotation_rad=turn)
                                       for image, centre, turn in zip(stack, centre_list, rotations, strict=True)),
                                     strict=True)
            return np.stack(inputs), list(transforms)
        transforms = [grid_transform(stack.shape[1:], pixel_spacing_mm, grid, centre_rc=centre, rotation_rad=turn)
                      for centre, turn in zip(centre_list, rotations, strict=True)]
        return resample_stack(normalised, transforms), transforms

    def _coarse_landmarks(self, stack: np.ndarray, normalised: np.ndarray | None, pixel_spacing_mm: tuple[float, float],
                          rotations: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The coarse stage's landmarks of each image: (N, K, 2) image pixels and (N, K) peak probabilities."""
        coarse_inputs, transforms = self._grid_inputs(stack, normalised, pixel_spacing_mm, self.spec.coarse_grid, None,
                                                      rotations)
        points_grid, peak = decode_heatmaps(self.run_stage("coarse", coarse_inputs))
        points = np.stack([transform.grid_to_image(p) for p, transform in zip(points_grid, transforms, strict=True)])
        return points, peak


def mirrored_back(probabilities: torch.Tensor, view: str) -> torch.Tensor:
    """(N, K+1, S, S) heatmaps of mirrored crops, mirrored back onto the crops with the handed landmarks swapped."""
    # Channel c of the mirrored output is landmark MIRROR_SWAP[c] of the image (background stays first).
    unmirror = [0] + [1 + swapped for swapped in MIRROR_SWAP[view]]
    return probabilities.flip(-1)[:, unmirror]


def pool_mirror_passes(direct: torch.Tensor, mirrored: torch.Tensor, pooling: str) -> torch.Tensor:
    """One (N, K+1, S, S) softmax map from the direct and the (already unmirrored) mirrored pass."""
    if pooling == "mean":
        return 0.5 * (direct + mirrored)
    if pooling == "log_linear":
        # Softmax of the mean log-probability = the two distributions multiplied and renormalised per pixel. The
        # clamp keeps a probability that bf16 rounded to 0 from vetoing the other pass outright.
        log_mean = 0.5 * (torch.log(direct.clamp_min(1e-12)) + torch.log(mirrored.clamp_min(1e-12)))
        return torch.softmax(log_mean, dim=1)
    raise ValueError(f"mirror pooling must be one of {MIRROR_POOLINGS}, got {pooling!r}")


def crop_centres(points_rc: np.ndarray, peak_probability: np.ndarray) -> np.ndarray:
    """(N, 2) image pixels where the fine crop of each image is centred: the coarse landmarks' mean weighted by
    their peak probabilities (``points_rc`` (N, K, 2) image pixels, ``peak_probability`` (N, K))."""
    weights = peak_probability + 1e-6
    return (points_rc * weights[..., None]).sum(axis=1) / weights.sum(axis=1, keepdims=True)


# A coarse peak this strong is a landmark the coarse stage has seen; weaker ones do not restrict the fine search.
COARSE_GUIDE_PROBABILITY = 0.1


def restrict_to_coarse_windows(
    probabilities: torch.Tensor,
    coarse_points_rc: np.ndarray,
    coarse_peak: np.ndarray,
    transforms: Sequence[GridTransform],
    radius_px: float,
) -> torch.Tensor:
    """Fine heatmaps (N, K+1, S, S) with each landmark channel set to 0 farther than ``radius_px`` (fine-grid
    pixels) from that landmark's coarse point (``coarse_points_rc`` (N, K, 2) image pixels); channels whose
    coarse peak is below ``COARSE_GUIDE_PROBABILITY`` are left whole."""
    centres = torch.from_numpy(np.stack([transform.image_to_grid(points)
                                         for points, transform in zip(coarse_points_rc, transforms, strict=True)]))
    axis = torch.arange(probabilities.shape[-1], dtype=torch.float64)
    squared = ((axis[:, None] - centres[..., 0, None, None]) ** 2       # (N, K, S, S)
               + (axis[None, :] - centres[..., 1, None, None]) ** 2)
    unguided = torch.from_numpy(coarse_peak < COARSE_GUIDE_PROBABILITY)[..., None, None]
    keep = (squared <= radius_px**2) | unguided
    restricted = probabilities.clone()
    restricted[:, 1:] *= keep.to(restricted.dtype)
    return restricted


def detect_in_orientation(detector: Detector, images: np.ndarray, pixel_spacing_mm: tuple[float, float],
                          quarter_turns: int, mirror: bool, **detect_options) -> list[ImageLandmarks]:
    """``detector.detect`` on the images shown turned and mirrored (``geometry.orient_image``), the points mapped
    back to the images as given. A short-axis model was trained on one display, and the gadget turns an image into
    it from its header (``geometry.model_display_orientation``)."""
    if (quarter_turns % 4, mirror) == (0, False):
        return detector.detect(images, pixel_spacing_mm, **detect_options)
    images = np.asarray(images)
    shown = np.stack([orient_image(image, quarter_turns, mirror) for image in images])
    spacing = oriented_spacing_mm(pixel_spacing_mm, quarter_turns)
    mapped = []
    for found in detector.detect(shown, spacing, **detect_options):
        back = {}
        for name, landmark in found.items():
            if landmark is None:
                back[name] = None
                continue
            (row, col), = points_to_original(np.array([[landmark.row, landmark.col]]), images.shape[-2:],
                                             quarter_turns, mirror)
            back[name] = Landmark(float(row), float(col), landmark.probability)
        mapped.append(back)
    return mapped


def lax_points_rc(found: ImageLandmarks) -> np.ndarray:
    """(3, 2) (row, col) of MV-1, MV-2, APEX in one image's detections; NaN for a landmark not found."""
    return np.array([(found[n].row, found[n].col) if found[n] is not None else (np.nan, np.nan) for n in LAX_LANDMARKS])


def long_axis_direction_deg(points_rc: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> float:
    """Direction (degrees counter-clockwise from the viewer's right, as the image is displayed) from APEX to the
    midpoint of MV-1 and MV-2; ``points_rc`` (3, 2) rows MV-1, MV-2, APEX in pixels. NaN when one is."""
    return midpoint_direction_deg(points_rc, pixel_spacing_mm)
