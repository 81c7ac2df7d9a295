"""Training augmentation: one random affine folded into the grid transform, then intensity changes on the grid.

The geometric part (rotation, scale, translation, mirror) is a :class:`RandomAffine` drawing parameters that
:func:`preprocess.grid_transform` turns into the single grid->image map, so each image is interpolated once
and the landmarks follow through the same map exactly. A mirror swaps landmark order (config.MIRROR_SWAP): a
mirrored short-axis image has its anterior and posterior RV insertion points exchanged. A :class:`SmoothDeformation`
can then warp the grid image (a second linear interpolation, for the items it is drawn for), the landmarks following
through the warp's inverse.

The intensity part is a list of small callables ``(grid image, rng, pixel_mm) -> grid image`` composed with
:class:`Compose` and :class:`RandomApply` (the MONAI pattern), each modelling one thing scanners do: surface
coil shading and the vendor's shading correction, Rician noise of magnitude images, blur, contrast and gamma.
Sizes are in mm so one pipeline serves the 4 mm coarse grid and the 1.25 mm fine grid alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .config import MIRROR_SWAP, StageGrid
from .preprocess import GridTransform, grid_transform, resample_to_grid

IntensityTransform = Callable[[np.ndarray, np.random.Generator, float], np.ndarray]


# --- geometry --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AffineParameters:
    """One draw of the geometric augmentation."""

    rotation_rad: float = 0.0
    scale: float = 1.0
    translation_mm: tuple[float, float] = (0.0, 0.0)  # (row, col) shift of the sampled centre, in mm
    mirror: bool = False


@dataclass(frozen=True)
class RandomAffine:
    """Draws rotation (uniform +-max_rotation_deg), scale (log-uniform), translation (uniform +-mm) and mirror."""

    max_rotation_deg: float = 30.0
    scale_range: tuple[float, float] = (0.85, 1.2)
    max_translation_mm: float = 0.0
    mirror_probability: float = 0.5

    def __call__(self, rng: np.random.Generator) -> AffineParameters:
        low, high = np.log(self.scale_range)
        return AffineParameters(
            rotation_rad=float(np.deg2rad(rng.uniform(-self.max_rotation_deg, self.max_rotation_deg))),
            scale=float(np.exp(rng.uniform(low, high))),
            translation_mm=tuple(float(v) for v in rng.uniform(-self.max_translation_mm, self.max_translation_mm, 2)),
            mirror=bool(rng.random() < self.mirror_probability),
        )


def sample_on_grid(
    image: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    landmarks_rc: np.ndarray,
    grid: StageGrid,
    view: str,
    centre_rc: tuple[float, float] | None = None,
    affine: AffineParameters | None = None,
) -> tuple[np.ndarray, np.ndarray, GridTransform]:
    """Resample a normalised image onto ``grid`` under ``affine`` and carry its landmarks along.

    Returns (grid image, landmarks in grid pixels (K, 2) reordered after a mirror, transform). ``centre_rc``
    (image pixels, default the image centre) is moved by ``affine.translation_mm`` before sampling.
    """
    affine = affine or AffineParameters()
    if centre_rc is None:
        centre_rc = ((image.shape[0] - 1) / 2.0, (image.shape[1] - 1) / 2.0)
    centre = np.asarray(centre_rc, dtype=np.float64) + np.asarray(affine.translation_mm) / np.asarray(pixel_spacing_mm)
    transform = grid_transform(
        image.shape,
        pixel_spacing_mm,
        grid,
        centre_rc=tuple(centre),
        rotation_rad=affine.rotation_rad,
        scale=affine.scale,
        mirror=affine.mirror,
    )
    grid_points = transform.image_to_grid(landmarks_rc)
    if affine.mirror:
        grid_points = grid_points[list(MIRROR_SWAP[view])]
    return resample_to_grid(image, transform), grid_points, transform


@dataclass(frozen=True)
class SmoothDeformation:
    """A smooth random warp of the anatomy on the grid (the non-linear deformation of SynthSeg, Billot et al.,
    Medical Image Analysis 2023): hearts differ in shape more than a rotation and a scale cover (a thin scarred
    wall, a dilated ventricle, a wide or narrow RV wedge at the septum).

    The displacement is white noise smoothed by a Gaussian of SD ``smoothing_mm`` and scaled to an RMS drawn
    uniformly within 0..``max_rms_mm``. Each entry of its gradient then has an SD of about rms / (2 smoothing): 0.1
    at the defaults, at most about 0.5 anywhere in a 96-pixel grid, well below the 1 where a warp folds.
    """

    max_rms_mm: float = 3.0
    smoothing_mm: float = 15.0

    def displacement_px(self, shape: tuple[int, int], pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
        """(2, rows, cols) displacement in grid pixels: output pixel x shows the input at x + displacement[:, x]."""
        sigma_px = self.smoothing_mm / pixel_mm
        field = ndimage.gaussian_filter(rng.standard_normal((2, *shape)), sigma=(0, sigma_px, sigma_px), mode="wrap")
        rms = float(np.sqrt((field**2).sum(axis=0).mean()))
        return field * (rng.uniform(0.0, self.max_rms_mm) / pixel_mm / max(rms, 1e-12))


def warp_image(image: np.ndarray, displacement_px: np.ndarray) -> np.ndarray:
    """``image`` (rows, cols) resampled at x + displacement (linear, edges extended)."""
    rows, cols = np.meshgrid(np.arange(image.shape[0]), np.arange(image.shape[1]), indexing="ij")
    coordinates = np.stack([rows + displacement_px[0], cols + displacement_px[1]])
    return ndimage.map_coordinates(image, coordinates, order=1, mode="nearest").astype(np.float32)


def warp_points(points_rc: np.ndarray, displacement_px: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Where the points (K, 2) of the unwarped image lie in :func:`warp_image`'s output: the x with
    x + displacement(x) = p, by fixed-point iteration (it converges while the field's gradient is below 1).
    Absent (NaN) points stay NaN."""
    points = np.asarray(points_rc, dtype=np.float64)
    present = np.isfinite(points).all(axis=1)
    warped = points.copy()
    x = points[present]
    for _ in range(iterations):
        shift = np.stack([ndimage.map_coordinates(component, x.T, order=1, mode="nearest")
                          for component in displacement_px], axis=1)
        x = points[present] - shift
    warped[present] = x
    return warped


# --- intensity -------------------------------------------------------------------------------------------------


def _grid_coordinates_mm(shape: tuple[int, int], pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    rows = (np.arange(shape[0]) - (shape[0] - 1) / 2.0) * pixel_mm
    cols = (np.arange(shape[1]) - (shape[1] - 1) / 2.0) * pixel_mm
    return np.meshgrid(rows, cols, indexing="ij")


@dataclass(frozen=True)
class CoilShading:
    """Smooth multiplicative bias: a surface coil near one side makes nearby tissue bright, far tissue dark.

    Modelled as exp(linear ramp + Gaussian bump), the ramp reaching up to ``max_log_gain`` over
    ``length_mm``, the bump (coil position) anywhere within the field of view.
    """

    max_log_gain: float = 0.7
    length_mm: float = 150.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        rows_mm, cols_mm = _grid_coordinates_mm(image.shape, pixel_mm)
        direction = rng.normal(size=2)
        direction /= np.linalg.norm(direction) + 1e-12
        ramp = (direction[0] * rows_mm + direction[1] * cols_mm) / self.length_mm
        coil_rc = rng.uniform(-self.length_mm, self.length_mm, 2)
        bump = np.exp(-((rows_mm - coil_rc[0]) ** 2 + (cols_mm - coil_rc[1]) ** 2) / (2 * (0.6 * self.length_mm) ** 2))
        log_gain = rng.uniform(-1, 1) * self.max_log_gain * ramp + rng.uniform(0, self.max_log_gain) * bump
        return (image * np.exp(log_gain)).astype(np.float32)


@dataclass(frozen=True)
class ShadingCorrection:
    """The scanner's surface-coil intensity correction: divide by a heavily smoothed copy of the image."""

    sigma_mm: float = 30.0

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        positive = np.clip(image, 0.0, None)
        smooth = ndimage.gaussian_filter(positive, sigma=self.sigma_mm / pixel_mm, mode="nearest")
        corrected = positive / (smooth + 0.1 * float(smooth.mean()) + 1e-6)
        high = np.percentile(corrected, 99.0)
        return (corrected / high if high > 1e-6 else corrected).astype(np.float32)


@dataclass(frozen=True)
class RicianNoise:
    """Magnitude of complex Gaussian noise added to the image (what a magnitude reconstruction shows)."""

    max_sigma: float = 0.06

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        sigma = rng.uniform(0.0, self.max_sigma)
        real = image + rng.normal(0.0, sigma, image.shape)
        imaginary = rng.normal(0.0, sigma, image.shape)
        return np.hypot(real, imaginary).astype(np.float32)


@dataclass(frozen=True)
class GaussianBlur:
    """Blur of up to ``max_sigma_mm`` (lower acquired resolution than the grid)."""

    max_sigma_mm: float = 1.5

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        sigma_px = rng.uniform(0.0, self.max_sigma_mm) / pixel_mm
        return ndimage.gaussian_filter(image, sigma=sigma_px).astype(np.float32) if sigma_px > 0.2 else image


@dataclass(frozen=True)
class GammaContrast:
    """Gamma (log-uniform in ``gamma_range``) then a contrast stretch about the mean."""

    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_range: tuple[float, float] = (0.75, 1.3)

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        gamma = np.exp(rng.uniform(*np.log(self.gamma_range)))
        positive = np.clip(image, 0.0, None) ** gamma
        mean = float(positive.mean())
        return ((positive - mean) * rng.uniform(*self.contrast_range) + mean).astype(np.float32)


@dataclass(frozen=True)
class RandomApply:
    """Apply ``transform`` with ``probability``."""

    transform: IntensityTransform
    probability: float

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        return self.transform(image, rng, pixel_mm) if rng.random() < self.probability else image


@dataclass(frozen=True)
class Compose:
    """Apply transforms in order; the result is clipped to the range :func:`preprocess.normalise_intensity` gives."""

    transforms: Sequence[IntensityTransform]

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        for transform in self.transforms:
            image = transform(image, rng, pixel_mm)
        return np.clip(image, -0.5, 2.0).astype(np.float32)


@dataclass(frozen=True)
class RandomConvolutions:
    """The image through a shallow network of random convolutions and leaky ReLUs, blended with itself and brought
    back to its own mean and SD: a random non-linear remapping of intensity *and* local texture ("global intensity
    non-linear augmentation", Ouyang et al., IEEE TMI 2023, for segmenters that must stand scanners and contrasts
    they were not trained on). Per-tissue random contrast (synth.contrast) remaps each tissue's value; this also
    changes how edges and textures look, which is where synthetic images differ from real ones. Kernels are in grid
    pixels (``pixel_mm`` is not used): 3x3 spans 3.75 mm on the fine grid and 12 mm on the coarse one."""

    layers: int = 4
    channels: int = 2
    kernel_sizes: tuple[int, ...] = (1, 3)
    negative_slope: float = 0.2

    def __call__(self, image: np.ndarray, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
        features = [image.astype(np.float64)]
        for layer in range(self.layers):
            outputs = 1 if layer == self.layers - 1 else self.channels
            size = int(rng.choice(self.kernel_sizes))
            kernels = rng.standard_normal((outputs, len(features), size, size))
            features = [sum(ndimage.correlate(feature, kernel, mode="nearest")
                            for feature, kernel in zip(features, kernels[o], strict=True)) for o in range(outputs)]
            if layer < self.layers - 1:
                features = [np.where(f > 0, f, self.negative_slope * f) for f in features]
        alpha = rng.uniform(0.0, 1.0)
        blended = alpha * _like(features[0], image) + (1.0 - alpha) * image
        return _like(blended, image).astype(np.float32)


def _like(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``values`` shifted and scaled to ``reference``'s mean and SD."""
    return (values - values.mean()) / max(float(values.std()), 1e-6) * float(reference.std()) + float(reference.mean())


def default_intensity_augmentation(random_convolution_fraction: float = 0.0) -> Compose:
    """Shading (corrected half the time, as scanners do when the option is on), then noise, blur, gamma; and, for
    ``random_convolution_fraction`` of the items, :class:`RandomConvolutions` last (none drawn at 0, so a recipe
    without it keeps its random stream)."""
    transforms: list[IntensityTransform] = [
        RandomApply(CoilShading(), 0.6),
        RandomApply(ShadingCorrection(), 0.25),
        RandomApply(GammaContrast(), 0.6),
        RandomApply(GaussianBlur(), 0.3),
        RandomApply(RicianNoise(), 0.5),
    ]
    if random_convolution_fraction:
        transforms.append(RandomApply(RandomConvolutions(), random_convolution_fraction))
    return Compose(transforms)
