"""Contrast-agnostic augmentation: every tissue label gets a random intensity (SynthSeg-like).

A network trained on cine and LGE only learns their contrasts; one trained on images whose tissue intensities
are redrawn at random every time has to find the landmarks from shape alone, which is what carries over to
contrasts never seen in training (T1/T2 maps, perfusion, other vendors). The geometry is never touched, so the
landmarks of the slice stay valid.

Labelled tissues (LV blood, LV myocardium, RV blood) get a random mean plus some of their own source texture;
everything else (label 0) is the source image passed through a random curve, monotone or not, so chest wall,
liver, fat and lung keep their shapes but not their brightness order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..datasets import Slice

# Mask labels of cmr_landmark.datasets.Slice.mask
BACKGROUND_LABEL, LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL = 0, 1, 2, 3
TISSUE_LABELS: tuple[int, ...] = (LV_BLOOD_LABEL, LV_MYOCARDIUM_LABEL, RV_BLOOD_LABEL)

# Myocardium must stay distinguishable from the blood pools it separates, else the RV insertion points are
# undefined in the picture even though the labels define them: a training target nothing in the image supports.
MIN_MYOCARDIUM_BLOOD_CONTRAST = 0.15

# Codes of the pathology map (cmr_landmark.datasets: MyoPS oedema and scar inside the myocardium).
OEDEMA, SCAR = 1, 2  # 0: none
# A drawn infarct (draw_infarct): a coronary territory spans 40-140 degrees of the short-axis ring, the scar grows
# from the endocardium outward (the ischaemic wavefront) from a third of the wall to all of it, and in half the
# infarcts (acute) oedema reaches 10-30 degrees beyond the scar on each side, through the whole wall.
INFARCT_HALF_WIDTH_DEG = (20.0, 70.0)
INFARCT_TRANSMURALITY = (0.3, 1.0)
INFARCT_OEDEMA_PROBABILITY = 0.5
INFARCT_OEDEMA_MARGIN_DEG = (10.0, 30.0)

# The RV free wall is not labelled in the public sets (label 0), so without help a synthetic image gives it the
# body's random value, while in every real image, whatever the contrast, it is myocardium continuous with the LV's
# at the insertion points. Adult RV free wall: 2-5 mm (with trabeculation and partial volume).
RV_WALL_MM = (2.0, 5.0)


def normalised_source(image: np.ndarray) -> np.ndarray:
    """The image scaled so its 1st..99th percentile spans 0..1, clipped to 0..1 (the input of the curves)."""
    image = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(image, [1.0, 99.0])
    if not np.isfinite(high - low) or high - low <= 1e-9:
        return np.zeros(image.shape)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def random_curve(
    rng: np.random.Generator,
    low: float,
    high: float,
    n_knots: int | None = None,
    monotone: str | None = None,
    log_scale: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x in 0..1, y in low..high) of a random piecewise-linear intensity curve.

    ``monotone``: "increasing", "decreasing" or "none" (non-monotone); default drawn at random. ``log_scale``
    draws y log-uniformly (for relaxation times, where 250 and 3000 ms are equally plausible tissue values).
    Apply with ``np.interp(u, x, y)``.
    """
    if not low < high or (log_scale and low <= 0):
        raise ValueError(f"need low < high (and low > 0 on a log scale), got {low}, {high}")
    n_knots = int(rng.integers(3, 7)) if n_knots is None else n_knots
    monotone = str(rng.choice(["increasing", "decreasing", "none"])) if monotone is None else monotone
    x = np.concatenate([[0.0], np.sort(rng.uniform(0.0, 1.0, n_knots - 2)), [1.0]])
    y = np.exp(rng.uniform(np.log(low), np.log(high), n_knots)) if log_scale else rng.uniform(low, high, n_knots)
    if monotone == "increasing":
        y = np.sort(y)
    elif monotone == "decreasing":
        y = np.sort(y)[::-1]
    elif monotone != "none":
        raise ValueError(f"monotone must be 'increasing', 'decreasing' or 'none', got {monotone!r}")
    return x, y


def smooth_random_field(shape: tuple[int, int], rng: np.random.Generator, scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std random field smooth over ``scale_px`` pixels (bias fields, tissue texture)."""
    # Smooth on a grid 4 samples per scale length, then interpolate up: a large-sigma filter on the full image
    # would cost a second per slice.
    step = max(scale_px / 4.0, 1.0)
    coarse_shape = tuple(int(np.ceil(n / step)) + 1 for n in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), sigma=scale_px / step, mode="reflect")
    zoom = [n / c for n, c in zip(shape, coarse_shape, strict=True)]
    field = ndimage.zoom(field, zoom, order=1)[: shape[0], : shape[1]]
    field = field - field.mean()
    std = field.std()
    return field / std if std > 0 else field


def _draw_tissue_means(rng: np.random.Generator) -> dict[int, float]:
    while True:
        means = {label: float(rng.uniform(0.0, 1.0)) for label in TISSUE_LABELS}
        myocardium = means[LV_MYOCARDIUM_LABEL]
        if min(abs(myocardium - means[LV_BLOOD_LABEL]), abs(myocardium - means[RV_BLOOD_LABEL])) >= (
            MIN_MYOCARDIUM_BLOOD_CONTRAST
        ):
            return means


def uneven_blood_signal(shape: tuple[int, int], blood_mean: float, myocardium_mean: float,
                        rng: np.random.Generator) -> np.ndarray:
    """An image of ``shape`` (H, W): intensity to add to a blood pool of mean ``blood_mean`` (the caller keeps it to
    the pool's pixels). Patches about 5-17 pixels across over half the image, zero between them, drawn toward the
    myocardium's level ``myocardium_mean``: the brightest patch in a pool typically reaches about that level.

    Flowing blood is never uniform: slow flow beside the trabeculae keeps signal that a black-blood preparation
    should null, turbulent or fast flow dephases in bright-blood images, and a map's fit fails in parts of the pool.
    Without it every blood pool the model trains on is a flat field, and one with patches as bright as the
    myocardium hides the septum's borders from it.
    """
    # A unit-SD field smooth over 2-6 px, clipped at 0: a patch's peak is 1-1.3 SD at the median, 3 SD at the 90th
    # percentile, times a gain of 0.3-0.8 of the blood-myocardium contrast.
    patches = np.clip(smooth_random_field(shape, rng, scale_px=rng.uniform(2.0, 6.0)), 0.0, None)
    return (myocardium_mean - blood_mean) * rng.uniform(0.3, 0.8) * patches


def add_uneven_blood(value: np.ndarray, mask: np.ndarray, myocardium_level: float, blood_levels: dict[int, float],
                     rng: np.random.Generator, fraction: float) -> None:
    """With probability ``fraction``, give each blood pool of ``mask`` (label -> its level in ``blood_levels``) in
    ``value`` (H, W, float, changed in place) patches of :func:`uneven_blood_signal` toward ``myocardium_level``.

    At ``fraction`` 0 nothing is drawn from ``rng``, so images drawn without patches are those of the recipes from
    before they existed.
    """
    if not fraction or rng.random() >= fraction:
        return
    for label, level in blood_levels.items():
        inside = mask == label
        if inside.any():
            value[inside] += uneven_blood_signal(mask.shape, level, myocardium_level, rng)[inside]


def add_myocardial_lesions(value: np.ndarray, mask: np.ndarray, myocardium_level: float, blood_level: float,
                           rng: np.random.Generator, fraction: float) -> None:
    """With probability ``fraction``, give the LV myocardium of ``mask`` in ``value`` (H, W, float, changed in place)
    patches like the blood's (:func:`uneven_blood_signal`), toward ``blood_level`` or as far the other way (a coin).

    Lesions change the myocardium's signal in patches: scar in LGE and ECV maps is as bright as the blood, oedema in
    T2 maps and T2-weighted images brighter than the myocardium around it. A wall the model only ever saw uniform
    loses its border with the blood where a lesion reaches the blood's level. At ``fraction`` 0 nothing is drawn.
    """
    if not fraction or rng.random() >= fraction:
        return
    target_level = blood_level if rng.random() < 0.5 else 2.0 * myocardium_level - blood_level
    myocardium = mask == LV_MYOCARDIUM_LABEL
    value[myocardium] += uneven_blood_signal(mask.shape, myocardium_level, target_level, rng)[myocardium]


def has_lesions(pathology: np.ndarray | None) -> bool:
    """Whether a pathology map (:data:`OEDEMA`, :data:`SCAR`; None on slices without MyoPS labels) marks any."""
    return pathology is not None and bool(np.asarray(pathology).any())


def draw_infarct(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pathology map (H, W, uint8: :data:`SCAR`, :data:`OEDEMA`, else 0) of an infarct drawn in the LV myocardium
    of ``mask``, in a random territory (:data:`INFARCT_HALF_WIDTH_DEG` around a random direction from the LV
    centre), scar from the endocardium to a random share of the wall (:data:`INFARCT_TRANSMURALITY`, its edge
    ragged by about a tenth of the wall over 4 pixels), oedema around it in acute ones. All zeros where the slice
    has no LV blood pool or myocardium.

    The public labels carry scar and oedema on the MyoPS slices only (13 % of the short-axis training slices): this
    puts infarcts on any labelled slice, so that a model sees the septum at the blood's value (scar after contrast)
    as often as it will in a clinic's maps.
    """
    mask = np.asarray(mask)
    myocardium = mask == LV_MYOCARDIUM_LABEL
    lv_blood = mask == LV_BLOOD_LABEL
    pathology = np.zeros(mask.shape, dtype=np.uint8)
    if not (myocardium.any() and lv_blood.any()):
        return pathology
    centre_r, centre_c = ndimage.center_of_mass(lv_blood)
    rows, cols = np.indices(mask.shape)
    direction = np.arctan2(rows - centre_r, cols - centre_c)
    from_territory_centre = np.abs(np.angle(np.exp(1j * (direction - rng.uniform(-np.pi, np.pi)))))
    from_endocardium = ndimage.distance_transform_edt(~lv_blood)
    to_epicardium = ndimage.distance_transform_edt(myocardium | lv_blood)  # RV blood is outside too: the septum
    depth = from_endocardium / np.maximum(from_endocardium + to_epicardium, 1e-6)  # 0 endocardium .. 1 epicardium
    half_width = np.deg2rad(rng.uniform(*INFARCT_HALF_WIDTH_DEG))
    transmurality = rng.uniform(*INFARCT_TRANSMURALITY) + 0.1 * smooth_random_field(mask.shape, rng, scale_px=4.0)
    if rng.random() < INFARCT_OEDEMA_PROBABILITY:
        margin = np.deg2rad(rng.uniform(*INFARCT_OEDEMA_MARGIN_DEG))
        pathology[myocardium & (from_territory_centre <= half_width + margin)] = OEDEMA
    pathology[myocardium & (from_territory_centre <= half_width) & (depth <= transmurality)] = SCAR
    return pathology


def add_infarct(value: np.ndarray, mask: np.ndarray, pathology: np.ndarray | None, myocardium_level: float,
                blood_level: float, rng: np.random.Generator, fraction: float) -> None:
    """With probability ``fraction``, shift the scar and oedema of ``pathology`` (the slice's labels; where it has
    none, an infarct from :func:`draw_infarct`) in the LV myocardium of ``value`` (H, W, float, changed in place):
    scar from a third of the way toward ``blood_level`` to a fifth beyond it (LGE, ECV maps, post-contrast T1:
    scar about as bright or dark as the blood), oedema 10-60 % of the way toward it or as far the other way (T2:
    oedema brighter than the myocardium whether the blood is bright or dark). At ``fraction`` 0 nothing is drawn.
    """
    if not fraction or rng.random() >= fraction:
        return
    if not has_lesions(pathology):
        pathology = draw_infarct(mask, rng)
    myocardium = np.asarray(mask) == LV_MYOCARDIUM_LABEL
    toward_blood = blood_level - myocardium_level
    value[myocardium & (pathology == SCAR)] += rng.uniform(0.3, 1.2) * toward_blood
    value[myocardium & (pathology == OEDEMA)] += rng.uniform(0.1, 0.6) * toward_blood * rng.choice([-1.0, 1.0])


def rv_wall_mask(mask: np.ndarray, pixel_spacing_mm: tuple[float, float], thickness_mm: float) -> np.ndarray:
    """The unlabelled pixels (H, W, bool) within ``thickness_mm`` of ``mask``'s RV blood pool: its free wall, which
    runs into the labelled LV myocardium at the insertion points."""
    rv_blood = np.asarray(mask) == RV_BLOOD_LABEL
    if not rv_blood.any():
        return np.zeros(rv_blood.shape, dtype=bool)
    distance_mm = ndimage.distance_transform_edt(~rv_blood, sampling=pixel_spacing_mm)
    return (distance_mm <= thickness_mm) & (np.asarray(mask) == BACKGROUND_LABEL)


def draw_rv_wall(mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | None, rng: np.random.Generator,
                 fraction: float) -> np.ndarray | None:
    """With probability ``fraction``, an RV free wall (:func:`rv_wall_mask`) of a thickness drawn from
    :data:`RV_WALL_MM`, to be given the myocardium's value; else None. No draw at ``fraction`` 0, so recipes from
    before the wall keep their random streams."""
    if not fraction or rng.random() >= fraction:
        return None
    if pixel_spacing_mm is None:
        raise ValueError("an RV wall in mm needs the image's pixel spacing (mm)")
    return rv_wall_mask(mask, pixel_spacing_mm, rng.uniform(*RV_WALL_MM))


def random_tissue_contrast(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                           uneven_blood_fraction: float = 0.0, myocardial_lesion_fraction: float = 0.0,
                           rv_wall_fraction: float = 0.0, pixel_spacing_mm: tuple[float, float] | None = None,
                           infarct_fraction: float = 0.0, pathology: np.ndarray | None = None) -> np.ndarray:
    """``image`` (H, W) redrawn with a random intensity per tissue of ``mask`` (H, W); float32, about 0..1.

    ``uneven_blood_fraction``: the share of images whose blood pools get patches of signal
    (:func:`add_uneven_blood`); ``myocardial_lesion_fraction``: the share whose myocardium gets lesion-like
    patches (:func:`add_myocardial_lesions`); ``rv_wall_fraction``: the share whose RV free wall
    (:func:`draw_rv_wall`, needs ``pixel_spacing_mm``) gets the myocardium's mean intensity;
    ``infarct_fraction``: the share whose scar and oedema (``pathology``, else a drawn infarct) get their own
    intensities (:func:`add_infarct`). Same geometry as the input: only intensities change.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be 2-D arrays of one shape")
    source = normalised_source(image)
    x, y = random_curve(rng, 0.0, 1.0)
    out = np.interp(source, x, y)
    means = _draw_tissue_means(rng)
    for label, mean in means.items():
        inside = mask == label
        if not inside.any():
            continue
        # Keep some of the tissue's own texture (trabeculation, papillary muscles), sign and strength random.
        texture_gain = rng.uniform(-0.6, 0.6)
        out[inside] = mean + texture_gain * (source[inside] - np.median(source[inside]))
    rv_wall = draw_rv_wall(mask, pixel_spacing_mm, rng, rv_wall_fraction)
    if rv_wall is not None:
        out[rv_wall] = means[LV_MYOCARDIUM_LABEL]
    add_uneven_blood(out, mask, means[LV_MYOCARDIUM_LABEL],
                     {label: means[label] for label in (LV_BLOOD_LABEL, RV_BLOOD_LABEL)}, rng, uneven_blood_fraction)
    add_myocardial_lesions(out, mask, means[LV_MYOCARDIUM_LABEL], means[LV_BLOOD_LABEL], rng,
                           myocardial_lesion_fraction)
    add_infarct(out, mask, pathology, means[LV_MYOCARDIUM_LABEL], means[LV_BLOOD_LABEL], rng, infarct_fraction)
    out = ndimage.gaussian_filter(out, sigma=rng.uniform(0.0, 1.2))  # partial volume at tissue borders
    out = out * (1.0 + rng.uniform(0.0, 0.25) * smooth_random_field(out.shape, rng, scale_px=out.shape[0] / 4))
    out = out + rng.uniform(0.0, 0.06) * rng.standard_normal(out.shape)
    out = np.clip(out, 0.0, None) ** rng.uniform(0.7, 1.5)
    return out.astype(np.float32)


def with_random_contrast(slice_: Slice, rng: np.random.Generator, uneven_blood_fraction: float = 0.0,
                         myocardial_lesion_fraction: float = 0.0, rv_wall_fraction: float = 0.0,
                         infarct_fraction: float = 0.0) -> Slice:
    """A copy of a :class:`cmr_landmark.datasets.Slice` whose image has random tissue contrast (landmarks kept)."""
    if slice_.mask is None:
        raise ValueError(f"slice {slice_.patient}/{slice_.slice_index} has no label mask to draw contrasts from")
    image = random_tissue_contrast(slice_.image, slice_.mask, rng, uneven_blood_fraction, myocardial_lesion_fraction,
                                   rv_wall_fraction, slice_.pixel_spacing_mm, infarct_fraction, slice_.pathology)
    return dataclasses.replace(slice_, image=image, source_image=slice_.image)


def random_contrast_slices(slices: Sequence[Slice], seed: int, copies: int = 1,
                           uneven_blood_fraction: float = 0.0, myocardial_lesion_fraction: float = 0.0,
                           rv_wall_fraction: float = 0.0) -> list[Slice]:
    """``copies`` random-contrast versions of every slice that has a mask, reproducible from ``seed``."""
    return [
        with_random_contrast(s, np.random.default_rng([seed, index, copy]), uneven_blood_fraction,
                             myocardial_lesion_fraction, rv_wall_fraction)
        for index, s in enumerate(slices)
        if s.mask is not None
        for copy in range(copies)
    ]
