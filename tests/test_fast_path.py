"""The inference fast path gives the unoptimised path's answers; the gadget and detector pick the GPU when there
is one. (Speed itself is measured by benchmarks/run_benchmarks.py, not asserted here.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmr_landmark import detector as detector_module
from cmr_landmark import gadget
from cmr_landmark.config import COARSE_GRID, FINE_CENTROID_RADIUS_MM, FINE_GRID_BY_VIEW, REPO_ROOT
from cmr_landmark.detector import Detector, pool_mirror_passes
from cmr_landmark.export import export_cascade
from cmr_landmark.gadget_parameters import GadgetParameters, ParameterError
from cmr_landmark.io.ismrmrd_file import read_ismrmrd_images
from cmr_landmark.model_store import find_model
from cmr_landmark.network import LandmarkCascade, UNet
from cmr_landmark.preprocess import (
    grid_transform,
    normalise_intensity,
    normalise_stack,
    preprocess,
    resample_stack,
    resample_to_grid,
    to_magnitude,
)

SAMPLES = REPO_ROOT / "samples"


@pytest.fixture(scope="module")
def lax_cine() -> tuple[np.ndarray, tuple[float, float]]:
    """The shipped 4-chamber cine sample: 25 phases of real pixels and their spacing."""
    _, images = read_ismrmrd_images(SAMPLES / "mnms2_001_lax_4ch_cine.h5")
    spacing = float(images[0].field_of_view[0]) / images[0].matrix_size[0]
    return np.stack([image.data[0, 0] for image in images[:8]]).astype(np.float32), (spacing, spacing)


@pytest.mark.parametrize("grid", [COARSE_GRID, FINE_GRID_BY_VIEW["sax"], FINE_GRID_BY_VIEW["lax"]])
def test_stack_preprocessing_equals_per_image_preprocessing(lax_cine, grid):
    stack, spacing = lax_cine
    # centres anywhere, including near the border where the grid reaches outside the image
    centres = [None, (3.0, 250.5), (127.3, 140.8), (300.0, -20.0)]
    images = np.concatenate([stack[:2], stack[:2]])
    transforms = [grid_transform(image.shape, spacing, grid, centre_rc=c) for image, c in zip(images, centres,
                                                                                                strict=True)]
    fast = resample_stack(normalise_stack(images), transforms)
    reference = np.stack([preprocess(image, spacing, grid, centre_rc=c)[0] for image, c in zip(images, centres,
                                                                                                strict=True)])
    np.testing.assert_allclose(fast, reference, atol=1e-5)


def test_stack_normalisation_handles_flat_and_complex_images():
    rng = np.random.default_rng(1)
    stack = np.stack([np.full((20, 30), 7.0), rng.normal(size=(20, 30)) + 1j * rng.normal(size=(20, 30)),
                      np.where(rng.random((20, 30)) > 0.5, np.nan, 100.0)])
    expected = np.stack([normalise_intensity(to_magnitude(image)) for image in stack])
    np.testing.assert_allclose(normalise_stack(stack), expected, atol=1e-6)
    assert not normalise_stack(stack)[0].any()  # a flat image carries no information


def test_rotated_transform_falls_back_to_the_per_image_resampler(lax_cine):
    stack, spacing = lax_cine
    image = normalise_intensity(stack[0])
    rotated = grid_transform(image.shape, spacing, FINE_GRID_BY_VIEW["lax"], rotation_rad=0.3)
    np.testing.assert_allclose(resample_stack(image[np.newaxis], [rotated])[0], resample_to_grid(image, rotated),
                               atol=1e-6)


def _random_cascade_detector(folder, optimised: bool, use_bf16: bool | None = None) -> Detector:
    torch.manual_seed(3)
    export_cascade(LandmarkCascade(UNet(3, widths=(8, 16)), UNet(3, widths=(8, 16))), "fast_path_lax", "lax", "cine",
                   COARSE_GRID, FINE_GRID_BY_VIEW["lax"], 0.0, folder)
    spec = find_model("lax", "cine", name="fast_path_lax", folder=folder)
    return Detector(spec, device=torch.device("cpu"), use_bf16=use_bf16, optimised=optimised)


def _points(results) -> np.ndarray:
    """(N, K, 2) points, NaN where a landmark is reported absent."""
    return np.array([[(lm.row, lm.col) if lm is not None else (np.nan, np.nan) for lm in found.values()]
                     for found in results])


@pytest.mark.parametrize("same_slice", [True, False])
def test_fast_path_in_fp32_gives_the_unoptimised_points(tmp_path, lax_cine, same_slice):
    """Everything but the precision: stack preprocessing, normalising once, channels-last, indexed decoding."""
    stack, spacing = lax_cine
    fast = _random_cascade_detector(tmp_path, optimised=True, use_bf16=False)
    reference = _random_cascade_detector(tmp_path, optimised=False)
    assert not reference.use_bf16
    fast_points = _points(fast.detect(stack, spacing, same_slice=same_slice))
    reference_points = _points(reference.detect(stack, spacing, same_slice=same_slice))
    assert np.abs(fast_points - reference_points).max() < 0.01  # pixels


def test_a_landmark_the_coarse_stage_did_not_see_does_not_pull_the_fine_crop():
    from cmr_landmark.detector import crop_centres

    points = np.array([[[40.0, 40.0], [60.0, 40.0], [200.0, 300.0]],   # a coarse peak of 0 far off
                       [[10.0, 10.0], [10.0, 30.0], [40.0, 10.0]]])    # weights 3 : 1 : 0
    peaks = np.array([[0.8, 0.8, 0.0], [0.6, 0.2, 0.0]])
    np.testing.assert_allclose(crop_centres(points, peaks), [[50.0, 40.0], [10.0, 15.0]], atol=1e-3)


def test_the_phases_of_a_slice_share_one_fine_crop(tmp_path, lax_cine):
    """same_slice: the fine crop is centred once for all phases (the median of their coarse centres), so that one
    phase the coarse stage misplaces neither moves the others' crop nor gets a crop of its own."""
    stack, spacing = lax_cine
    detector = _random_cascade_detector(tmp_path, optimised=True, use_bf16=False)
    moved = np.zeros_like(stack[0])
    moved[60:, 50:] = stack[0][:-60, :-50]  # the heart 60 rows down and 50 columns right
    phases = np.stack([stack[0], stack[0], moved])
    together = _points(detector.detect(phases, spacing, same_slice=True))
    apart = _points(detector.detect(phases, spacing, same_slice=False))
    # two of the three phases agree: the shared crop is theirs, and they are found as each is on its own
    np.testing.assert_allclose(together[:2], apart[:2], atol=1e-6)
    # the moved phase is seen through that crop, not one centred on its own content
    assert np.abs(together[2] - apart[2]).max() > 1.0


@pytest.mark.parametrize("view", ["sax", "lax"])
def test_trained_models_fast_path_agrees_with_the_unoptimised_path(lax_cine, view):
    """With bf16 where the CPU has it: the shipped models' points move by a fraction of a millimetre."""
    spec = find_model(view, "cine")
    if view == "lax":
        stack, spacing = lax_cine
    else:  # the sample short-axis stack's end-diastolic slices: different slices, one batch
        _, images = read_ismrmrd_images(SAMPLES / "mnms2_001_sax.h5")
        stack = np.stack([image.data[0, 0] for image in images if image.phase == 0]).astype(np.float32)
        spacing = (float(images[0].field_of_view[0]) / images[0].matrix_size[0],) * 2
    same_slice = view == "lax"
    fast = _points(Detector(spec).detect(stack, spacing, same_slice=same_slice))
    reference = _points(Detector(spec, optimised=False).detect(stack, spacing, same_slice=same_slice))
    # Compared where the reference finds the landmark (a slice beyond the heart has flat maps and no point).
    found = np.isfinite(reference[..., 0])
    assert found.sum() >= 3 and np.isfinite(fast[..., 0]).sum() >= found.sum() - 1
    distance_mm = np.linalg.norm((fast - reference) * np.asarray(spacing), axis=2)[found]
    assert np.nanmean(distance_mm) < 0.2 and np.nanmax(distance_mm) < 1.0


# --- mirror averaging ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("view, pooling", [("sax", "mean"), ("lax", "mean"), ("sax", "log_linear")])
def test_mirror_averaged_heatmaps_are_mirror_equivariant(tmp_path, view, pooling):
    """Averaging with the mirrored pass makes the fine stage exactly equivariant: the maps of a mirrored crop are
    the mirrored maps with the handed landmarks swapped (A-RVI <-> P-RVI, MV-1 <-> MV-2), whatever the weights
    and whichever pooling."""
    torch.manual_seed(5)
    export_cascade(LandmarkCascade(UNet(3, widths=(8, 16)), UNet(3, widths=(8, 16))), "mirror", view, "cine",
                   COARSE_GRID, FINE_GRID_BY_VIEW[view], 0.0, tmp_path, mirror_pooling=pooling)
    detector = Detector(find_model(view, "cine", name="mirror", folder=tmp_path), device=torch.device("cpu"),
                        use_bf16=False, optimised=False, mirror_average=True)
    size = FINE_GRID_BY_VIEW[view].size_px
    crops = np.random.default_rng(2).normal(size=(2, size, size)).astype(np.float32)
    direct = detector.fine_probabilities(crops)
    of_mirrored = detector.fine_probabilities(np.ascontiguousarray(crops[:, :, ::-1]))
    swapped = [0, 2, 1, 3]  # background, then the first two landmarks exchanged
    torch.testing.assert_close(of_mirrored, direct.flip(-1)[:, swapped], atol=1e-5, rtol=1e-4)
    plain = Detector(detector.spec, device=torch.device("cpu"), use_bf16=False, optimised=False)
    assert not torch.allclose(plain.fine_probabilities(crops), direct, atol=1e-3)  # it does change the maps


def test_log_linear_pooling_keeps_what_both_passes_agree_on():
    """Two passes that agree give that map back; where they disagree (one pass puts the landmark at pixel a, the
    other at b), the arithmetic mean keeps half a peak at each, the log-linear pool hands both pixels back to the
    background: a landmark only one look sees is not reported as half-present."""
    background = torch.full((1, 2, 1, 3), 0.0)
    background[0, 0] = 1.0
    agree = background.clone()
    agree[0, :, 0, 1] = torch.tensor([0.1, 0.9])
    torch.testing.assert_close(pool_mirror_passes(agree, agree, "log_linear"), agree)
    at_a, at_b = background.clone(), background.clone()
    at_a[0, :, 0, 0] = torch.tensor([0.1, 0.9])
    at_b[0, :, 0, 2] = torch.tensor([0.1, 0.9])
    mean, log_linear = pool_mirror_passes(at_a, at_b, "mean"), pool_mirror_passes(at_a, at_b, "log_linear")
    assert mean[0, 1, 0, 0] == pytest.approx(0.45) and mean[0, 1, 0, 2] == pytest.approx(0.45)
    assert log_linear[0, 1].max() < 0.01
    torch.testing.assert_close(log_linear.sum(dim=1), torch.ones(1, 1, 3))
    with pytest.raises(ValueError, match="mirror pooling"):
        pool_mirror_passes(agree, agree, "max")


def test_mirror_averaging_keeps_the_shipped_sax_model_on_the_sample():
    """On real slices the averaged points stay where the single pass puts them, give or take a millimetre or two
    (the accuracy gain itself is measured on the validation split: docs/training.md)."""
    spec = find_model("sax", "cine")
    _, images = read_ismrmrd_images(SAMPLES / "mnms2_001_sax.h5")
    stack = np.stack([image.data[0, 0] for image in images if image.phase == 0]).astype(np.float32)
    spacing = (float(images[0].field_of_view[0]) / images[0].matrix_size[0],) * 2
    single = _points(Detector(spec, mirror_average=False).detect(stack, spacing, probability_threshold=0.5))
    averaged = _points(Detector(spec, mirror_average=True).detect(stack, spacing, probability_threshold=0.5))
    both = np.isfinite(single[..., 0]) & np.isfinite(averaged[..., 0])
    assert both.sum() >= 10
    distance_mm = np.linalg.norm((single - averaged) * np.asarray(spacing), axis=2)[both]
    assert np.median(distance_mm) < 2.0


# --- coarse-guided fine search ------------------------------------------------------------------------------------


def test_fine_search_window_keeps_each_landmark_near_its_coarse_point():
    size = FINE_GRID_BY_VIEW["lax"].size_px
    transform = grid_transform((300, 300), (1.25, 1.25), FINE_GRID_BY_VIEW["lax"], centre_rc=(150.0, 150.0))
    probabilities = torch.full((1, 4, size, size), 0.01)
    probabilities[0, 1, 10, 10] = 0.9  # landmark 0: a strong wrong peak far from its coarse point ...
    probabilities[0, 1, 60, 70] = 0.5  # ... and the right, weaker one beside it
    probabilities[0, 2, 20, 100] = 0.8  # landmark 1: its coarse peak is too weak to guide, the map stays whole
    probabilities[0, 3, 100, 64] = 0.7  # landmark 2: right where the coarse stage put it
    coarse_rc = transform.grid_to_image(np.array([[62.0, 68.0], [90.0, 90.0], [100.0, 64.0]]))[None]
    coarse_peak = np.array([[0.8, detector_module.COARSE_GUIDE_PROBABILITY / 2, 0.9]])
    radius_mm = 10.0
    restricted = detector_module.restrict_to_coarse_windows(probabilities, coarse_rc, coarse_peak, [transform],
                                                            radius_mm / FINE_GRID_BY_VIEW["lax"].pixel_mm)
    peaks = [divmod(int(restricted[0, k].argmax()), size) for k in (1, 2, 3)]
    assert peaks == [(60, 70), (20, 100), (100, 64)]
    assert float(restricted[0, 1, 62, 68 + 9]) == 0.0  # 9 px = 11.25 mm: outside the 10 mm window
    assert float(restricted[0, 1, 62, 68 + 7]) == pytest.approx(0.01)  # 8.75 mm: inside
    torch.testing.assert_close(restricted[:, [0, 2]], probabilities[:, [0, 2]])  # background and unguided: as given


def test_fine_centroid_radius_travels_through_the_manifest_to_the_detector(tmp_path):
    torch.manual_seed(5)
    cascade = LandmarkCascade(UNet(3, widths=(8, 16)), UNet(3, widths=(8, 16)))
    export_cascade(cascade, "centroid", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.0, tmp_path)
    export_cascade(cascade, "peak", "sax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.0, tmp_path,
                   fine_centroid_radius_mm=None)
    centroid = Detector(find_model("sax", "cine", name="centroid", folder=tmp_path), device=torch.device("cpu"))
    peak = Detector(find_model("sax", "cine", name="peak", folder=tmp_path), device=torch.device("cpu"))
    assert centroid.spec.fine_centroid_radius_mm == FINE_CENTROID_RADIUS_MM
    assert peak.spec.fine_centroid_radius_mm is None
    images = np.random.default_rng(6).random((2, 140, 150)).astype(np.float32) * 100
    by_centroid = centroid.detect(images, (1.4, 1.4), probability_threshold=0.0)
    by_peak = peak.detect(images, (1.4, 1.4), probability_threshold=0.0)
    moved_mm = []
    for found_centroid, found_peak in zip(by_centroid, by_peak, strict=True):
        for name in centroid.spec.landmarks:
            a, b = found_centroid[name], found_peak[name]
            assert a.probability == b.probability  # the decoder moves points, never the peak probability
            moved_mm.append(np.hypot(a.row - b.row, a.col - b.col) * 1.4)
    # An untrained network's maps are broad, so the centre of mass is off the peak, but never off the window.
    assert max(moved_mm) > 0.1 and max(moved_mm) <= FINE_CENTROID_RADIUS_MM + 2.0


def test_the_detector_passes_the_centroid_window_in_fine_grid_pixels(tmp_path, monkeypatch):
    export_cascade(LandmarkCascade(UNet(3, widths=(8, 16)), UNet(3, widths=(8, 16))), "centroid", "sax", "cine",
                   COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.0, tmp_path)
    detector = Detector(find_model("sax", "cine", name="centroid", folder=tmp_path), device=torch.device("cpu"))
    radii = []
    decode = detector_module.decode_heatmaps

    def recording_decode(probabilities, centroid_radius_px=None):
        radii.append(centroid_radius_px)
        return decode(probabilities, centroid_radius_px)

    monkeypatch.setattr(detector_module, "decode_heatmaps", recording_decode)
    detector.detect(np.random.default_rng(7).random((1, 120, 130)).astype(np.float32), (1.3, 1.3))
    # coarse: its peak; fine: 15 mm over the SAX fine grid's 1.25 mm pixels, whatever the image's own spacing
    assert radii == [None, pytest.approx(FINE_CENTROID_RADIUS_MM / FINE_GRID_BY_VIEW["sax"].pixel_mm)]
    assert radii[1] == pytest.approx(12.0)


def test_fine_search_radius_travels_through_the_manifest_to_the_detector(tmp_path):
    torch.manual_seed(3)
    cascade = LandmarkCascade(UNet(3, widths=(8, 16)), UNet(3, widths=(8, 16)))
    export_cascade(cascade, "windowed", "lax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["lax"], 0.0, tmp_path,
                   fine_search_radius_mm=20.0)
    export_cascade(cascade, "whole", "lax", "cine", COARSE_GRID, FINE_GRID_BY_VIEW["lax"], 0.0, tmp_path)
    windowed = Detector(find_model("lax", "cine", name="windowed", folder=tmp_path), device=torch.device("cpu"))
    whole = Detector(find_model("lax", "cine", name="whole", folder=tmp_path), device=torch.device("cpu"))
    assert windowed.spec.fine_search_radius_mm == 20.0 and whole.spec.fine_search_radius_mm is None
    images = np.random.default_rng(4).random((2, 160, 150)).astype(np.float32) * 100
    coarse_rc, coarse_peak = windowed._coarse_landmarks(images, normalise_stack(images), (1.5, 1.5))
    found = windowed.detect(images, (1.5, 1.5), probability_threshold=0.0)
    checked = 0
    for n, image_landmarks in enumerate(found):
        for k, landmark in enumerate(image_landmarks.values()):
            # guided, and its window overlaps the crop (a window off the crop leaves nothing: probability 0)
            if coarse_peak[n, k] >= detector_module.COARSE_GUIDE_PROBABILITY and landmark.probability > 0:
                checked += 1  # within the window, give or take the sub-pixel shift (one fine pixel at most)
                distance_mm = np.hypot(*((np.array([landmark.row, landmark.col]) - coarse_rc[n, k]) * 1.5))
                assert distance_mm <= 20.0 + 1.25 * 1.5
    assert checked > 0
    assert len(whole.detect(images, (1.5, 1.5))) == 2


# --- device choice ------------------------------------------------------------------------------------------------


def test_auto_device_is_the_gpu_when_torch_sees_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gadget.torch_device("auto") == torch.device("cuda")
    assert gadget.torch_device("cpu") == torch.device("cpu")
    assert detector_module.default_device() == torch.device("cuda")


def test_auto_device_is_the_cpu_without_a_gpu_and_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gadget.torch_device("auto") == torch.device("cpu")
    assert detector_module.default_device() == torch.device("cpu")
    with pytest.raises(ParameterError, match="no GPU"):
        gadget.torch_device("cuda")


def test_gadget_loads_its_detector_on_the_gpu_with_fp16_autocast(monkeypatch, tmp_path):
    """The gadget's default device 'auto' reaches the Detector, which runs fp16 autocast there (no bf16)."""
    export_cascade(LandmarkCascade(UNet(3, widths=(4, 8)), UNet(3, widths=(4, 8))), "gpu_sax", "sax", "cine",
                   COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.0, tmp_path)
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    loaded_on = []
    monkeypatch.setattr(detector_module, "load_torchscript", lambda spec, device: loaded_on.append(device))
    monkeypatch.setattr(gadget, "_detectors", {})
    detector = gadget.cached_detector("sax", "cine", "", GadgetParameters().device)
    assert loaded_on == [torch.device("cuda")] and detector.device == torch.device("cuda")
    assert not detector.use_bf16
    autocast = detector._autocast()
    assert isinstance(autocast, torch.autocast) and autocast.device == "cuda" and autocast.fast_dtype == torch.float16


@pytest.mark.parametrize("forced", ["0", "1"])
def test_bf16_choice_can_be_forced_and_the_detector_follows_it(monkeypatch, tmp_path, forced):
    """``CMR_LANDMARK_BF16`` overrides the CPU's default for bf16 autocast."""
    monkeypatch.setenv(detector_module.BF16_ENVIRONMENT_VARIABLE, forced)
    detector_module.bf16_faster_on_cpu.cache_clear()
    try:
        assert detector_module.bf16_faster_on_cpu() is (forced == "1")
        detector = _random_cascade_detector(tmp_path, optimised=True)
        assert detector.use_bf16 is (forced == "1")
        autocast = detector._autocast()
        assert isinstance(autocast, torch.autocast) == (forced == "1")
    finally:
        detector_module.bf16_faster_on_cpu.cache_clear()


def test_bf16_is_chosen_where_it_was_measured_faster():
    """AMX: 3.6-3.9x faster; AMD EPYC with AVX512-BF16: 2x; Intel with AVX512-BF16 but no AMX: 1.4x slower."""
    amd, intel = "AuthenticAMD", "GenuineIntel"
    assert detector_module.bf16_pays_on(intel, frozenset({"avx512_bf16", "amx_bf16", "amx_tile"}))
    assert detector_module.bf16_pays_on(amd, frozenset({"avx512f", "avx512_bf16"}))
    assert not detector_module.bf16_pays_on(intel, frozenset({"avx512f", "avx512_bf16"}))
    assert not detector_module.bf16_pays_on(amd, frozenset({"avx2"}))


CPUINFO_SAMPLE = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu vme avx2 avx512f avx512_bf16

processor\t: 1
vendor_id\t: GenuineIntel
flags\t\t: fpu amx_bf16
"""


def test_cpuinfo_is_read_from_the_first_processor(tmp_path):
    assert detector_module.parse_cpuinfo(CPUINFO_SAMPLE) == (
        "AuthenticAMD", frozenset({"fpu", "vme", "avx2", "avx512f", "avx512_bf16"}))
    (tmp_path / "cpuinfo").write_text(CPUINFO_SAMPLE)
    assert detector_module.cpu_vendor_and_flags(tmp_path / "cpuinfo")[0] == "AuthenticAMD"
    assert detector_module.cpu_vendor_and_flags(tmp_path / "missing") == ("", frozenset())


@pytest.mark.parametrize(("cpu", "expected"), [(("AuthenticAMD", frozenset({"avx512_bf16"})), True),
                                               (("GenuineIntel", frozenset({"avx512_bf16"})), False)])
def test_the_detector_takes_the_cpus_verdict(monkeypatch, tmp_path, cpu, expected):
    monkeypatch.delenv(detector_module.BF16_ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(detector_module, "cpu_vendor_and_flags", lambda: cpu)
    detector_module.bf16_faster_on_cpu.cache_clear()
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            expected = False  # oneDNN without bf16 kernels: never, whatever the table says
        assert detector_module.bf16_faster_on_cpu() is expected
        assert _random_cascade_detector(tmp_path, optimised=True).use_bf16 is expected
        assert _random_cascade_detector(tmp_path, optimised=False).use_bf16 is False  # the reference path: fp32
    finally:
        detector_module.bf16_faster_on_cpu.cache_clear()


def test_an_unreadable_bf16_setting_warns_and_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setenv(detector_module.BF16_ENVIRONMENT_VARIABLE, "yes")
    monkeypatch.setattr(detector_module, "cpu_vendor_and_flags", lambda: ("GenuineIntel", frozenset()))
    detector_module.bf16_faster_on_cpu.cache_clear()
    try:
        with pytest.warns(UserWarning, match="neither 0 nor 1"):
            assert detector_module.bf16_faster_on_cpu() is False
    finally:
        detector_module.bf16_faster_on_cpu.cache_clear()


def test_a_grid_turned_by_r_shows_the_anatomy_turned_clockwise_by_r():
    # the convention the long-axis second pass relies on: a direction a in the image is a - r in the grid
    transform = grid_transform((200, 200), (1.5, 1.5), FINE_GRID_BY_VIEW["lax"], rotation_rad=np.radians(30.0))
    apex, mitral = np.array([150.0, 100.0]), np.array([100.0, 110.0])
    in_grid = transform.image_to_grid(np.stack([mitral, mitral, apex]))
    image_deg = detector_module.long_axis_direction_deg(np.stack([mitral, mitral, apex]), (1.5, 1.5))
    grid_deg = detector_module.long_axis_direction_deg(in_grid, (1.0, 1.0))
    assert (image_deg - grid_deg) % 360.0 == pytest.approx(30.0)


def _lax_points(direction_deg: float) -> dict:
    """MV-1, MV-2 and APEX whose apex-to-mitral direction is ``direction_deg`` (1 mm pixels)."""
    a = np.radians(direction_deg)
    apex = np.array([60.0, 60.0])
    mitral = apex + 40.0 * np.array([-np.sin(a), np.cos(a)])  # rows grow downwards
    across = 10.0 * np.array([np.cos(a), np.sin(a)])
    return {name: detector_module.Landmark(*point, 0.9)
            for name, point in zip(("MV-1", "MV-2", "APEX"), (mitral + across, mitral - across, apex), strict=True)}


@pytest.mark.parametrize("same_slice", [False, True])
def test_the_long_axis_second_pass_turns_each_image_from_its_found_to_the_recorded_direction(monkeypatch,
                                                                                             same_slice):
    from dataclasses import replace

    detector = Detector(replace(find_model("lax", "cine", folder=REPO_ROOT / "models"), display_long_axis_deg=90.0),
                        use_bf16=False)
    passes = []

    def recorded(stack, normalised, spacing, same, threshold, rotations):
        passes.append(np.degrees(rotations))
        return [_lax_points(30.0), _lax_points(50.0)]

    monkeypatch.setattr(detector, "_detect", recorded)
    detector.detect(np.ones((2, 32, 32)), (1.0, 1.0), same_slice=same_slice)
    assert len(passes) == 2 and np.allclose(passes[0], 0.0)
    # found at 30 and 50 degrees, recorded 90: turned by -60 and -40, or a cine slice once by its mean, -50
    np.testing.assert_allclose(passes[1], [-50.0, -50.0] if same_slice else [-60.0, -40.0], atol=1e-9)
    monkeypatch.setattr(detector, "spec", replace(detector.spec, display_long_axis_deg=None))
    detector.detect(np.ones((2, 32, 32)), (1.0, 1.0))
    assert len(passes) == 3  # without a recorded direction: one pass, unturned


def test_an_export_refused_for_its_size_leaves_the_shipped_file_and_manifest_alone(tmp_path, monkeypatch):
    from cmr_landmark import export as export_module
    from cmr_landmark.model_store import sha256_of

    export_cascade(LandmarkCascade(UNet(3, widths=(4, 8)), UNet(3, widths=(4, 8))), "m", "sax", "cine", COARSE_GRID,
                   FINE_GRID_BY_VIEW["sax"], 0.5, tmp_path)
    shipped = find_model("sax", "cine", folder=tmp_path)
    monkeypatch.setattr(export_module, "MAX_MODEL_BYTES", shipped.file.stat().st_size + 1000)
    with pytest.raises(ValueError, match="over the"):
        export_cascade(LandmarkCascade(UNet(3, widths=(8, 16)), UNet(3, widths=(8, 16))), "m", "sax", "cine",
                       COARSE_GRID, FINE_GRID_BY_VIEW["sax"], 0.5, tmp_path)
    assert sha256_of(shipped.file) == find_model("sax", "cine", folder=tmp_path).sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "manifest.json"]
