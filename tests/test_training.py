"""Training pipeline: augmentation geometry, heatmap round trip, loss, resume, DDP on two CPU processes."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sax_phantom import phantom_slices
from scipy import ndimage

from cmr_landmark import training as training_module
from cmr_landmark.augment import (
    AffineParameters,
    CoilShading,
    RandomConvolutions,
    RicianNoise,
    ShadingCorrection,
    SmoothDeformation,
    default_intensity_augmentation,
    sample_on_grid,
    warp_image,
    warp_points,
)
from cmr_landmark.config import COARSE_GRID, FINE_CENTROID_RADIUS_MM, FINE_GRID_BY_VIEW
from cmr_landmark.heatmaps import decode_heatmaps, render_heatmaps
from cmr_landmark.network import UNet, unet_widths
from cmr_landmark.preprocess import normalise_intensity
from cmr_landmark.synth.contrast import with_random_contrast
from cmr_landmark.synth.t1 import synthetic_t1_slice
from cmr_landmark.training import (
    DistillationDataset,
    FreshImages,
    HeatmapDataset,
    consistency_loss,
    distilled_targets,
    heatmap_loss,
    load_cascade,
    point_distance_loss,
    train_cascade,
    train_stage,
)

TINY_WIDTHS = (8, 16)


def test_mirror_mirrors_the_image_and_swaps_anterior_and_posterior() -> None:
    (slice_,) = phantom_slices(1, seed=3, empty_fraction=0.0)
    image = normalise_intensity(slice_.image)
    grid = FINE_GRID_BY_VIEW["sax"]
    centre = tuple(slice_.landmarks_rc[2])
    plain, plain_points, _ = sample_on_grid(image, slice_.pixel_spacing_mm, slice_.landmarks_rc, grid, "sax", centre)
    mirrored, mirrored_points, _ = sample_on_grid(
        image, slice_.pixel_spacing_mm, slice_.landmarks_rc, grid, "sax", centre, AffineParameters(mirror=True)
    )
    np.testing.assert_allclose(mirrored, plain[:, ::-1], atol=1e-5)
    flipped_cols = grid.size_px - 1 - plain_points[:, 1]
    # the anterior point of the mirrored image is where the posterior one lands, and vice versa; C-LV stays
    np.testing.assert_allclose(mirrored_points[0], [plain_points[1, 0], flipped_cols[1]], atol=1e-6)
    np.testing.assert_allclose(mirrored_points[1], [plain_points[0, 0], flipped_cols[0]], atol=1e-6)
    np.testing.assert_allclose(mirrored_points[2], [plain_points[2, 0], flipped_cols[2]], atol=1e-6)
    # the labelling rule holds on the mirrored image: A-RVI is the clockwise end of the RV arc, which is the
    # upper end with the RV on the left (as before the mirror) and the lower end with the RV on the right (after)
    assert plain_points[0, 0] < plain_points[1, 0] and plain_points[0, 1] < plain_points[2, 1]
    assert mirrored_points[0, 0] > mirrored_points[1, 0] and mirrored_points[0, 1] > mirrored_points[2, 1]


def test_rotation_and_scale_carry_landmarks_to_the_same_anatomy() -> None:
    (slice_,) = phantom_slices(1, seed=4, empty_fraction=0.0)
    image = normalise_intensity(slice_.image)
    affine = AffineParameters(rotation_rad=0.7, scale=1.2, translation_mm=(5.0, -4.0))
    grid_image, points, transform = sample_on_grid(
        image, slice_.pixel_spacing_mm, slice_.landmarks_rc, COARSE_GRID, "sax", affine=affine
    )
    np.testing.assert_allclose(transform.grid_to_image(points), slice_.landmarks_rc, atol=1e-9)
    row, col = np.round(points[2]).astype(int)
    assert grid_image[row, col] > 0.8  # the LV centre is in the bright blood pool on the augmented grid too


def test_a_smooth_deformation_moves_the_landmarks_with_the_anatomy() -> None:
    grid = FINE_GRID_BY_VIEW["sax"]

    def draw(seed: int) -> np.ndarray:
        return SmoothDeformation(max_rms_mm=3.0).displacement_px((grid.size_px, grid.size_px), grid.pixel_mm,
                                                                  np.random.default_rng(seed))

    # the RMS in mm is drawn within 0..3 mm, whatever the grid's pixel
    rms_mm = [float(np.sqrt((draw(seed) ** 2).sum(axis=0).mean())) * grid.pixel_mm for seed in range(20)]
    assert max(rms_mm) <= 3.0 + 1e-9 and max(rms_mm) > 2.5
    displacement = draw(0)
    # small Gaussian dots at known points: each dot's centre of mass after the warp is where warp_points puts it
    points = np.array([[30.3, 40.7], [60.0, 20.0], [np.nan, np.nan]])
    rows, cols = np.mgrid[: grid.size_px, : grid.size_px]
    dots = sum(np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.5**2)) for r, c in points[:2])
    warped, warped_points = warp_image(dots.astype(np.float32), displacement), warp_points(points, displacement)
    assert np.isnan(warped_points[2]).all()  # an absent landmark stays absent
    # each warped point is the inverse's: the warp shows the original point there
    shown = warped_points[:2] + np.stack([ndimage.map_coordinates(d, warped_points[:2].T, order=1)
                                           for d in displacement], axis=1)
    np.testing.assert_allclose(shown, points[:2], atol=1e-6)
    for point in warped_points[:2]:
        near = (rows - point[0]) ** 2 + (cols - point[1]) ** 2 < 6**2
        centre = [(axis * warped * near).sum() / (warped * near).sum() for axis in (rows, cols)]
        np.testing.assert_allclose(centre, point, atol=0.1)
    assert np.abs(warped_points[:2] - points[:2]).max() > 0.3  # and the warp did move them


def test_deformation_warps_only_its_share_of_items_and_both_views_of_a_pair_alike() -> None:
    slices = phantom_slices(16, seed=7, empty_fraction=0.0)
    plain = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1)
    half = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1, deformation_fraction=0.5)
    moved = [not torch.equal(plain[i][1], half[i][1]) for i in range(len(slices))]
    assert 2 <= sum(moved) <= 14  # about half; the others exactly as without (the same random stream)
    for i in range(len(slices)):
        assert moved[i] == (half.item_displacement(i) is not None)
        if not moved[i]:
            torch.testing.assert_close(plain[i][0], half[i][0])
    bare_pairs = _without_intensity_augmentation(HeatmapDataset(slices, "sax", "fine", augment=True, seed=1,
                                                                consistency_pairs=True, deformation_fraction=1.0))
    first, _, second = bare_pairs[3]
    torch.testing.assert_close(first, second)  # the same image through the same warp
    assert HeatmapDataset(slices, "sax", "fine", augment=False, deformation_fraction=1.0).item_displacement(0) is None
    with pytest.raises(ValueError, match="share"):
        HeatmapDataset(slices, "sax", "fine", augment=True, deformation_fraction=1.5)


def test_heatmap_round_trip_recovers_sub_pixel_points() -> None:
    rng = np.random.default_rng(5)
    grid = FINE_GRID_BY_VIEW["sax"]
    points = rng.uniform(10, grid.size_px - 10, (3, 2))
    maps = render_heatmaps(points, grid.size_px, grid.sigma_px)
    np.testing.assert_allclose(maps.sum(axis=0), 1.0, atol=1e-5)
    decoded, peak = decode_heatmaps(maps[None])
    np.testing.assert_allclose(decoded[0], points, atol=0.15)
    assert np.all(peak > 0.9)


def test_a_peak_on_the_grid_edge_stays_on_its_pixel() -> None:
    # with one neighbour outside the grid there is no parabola to fit: no half-pixel shift outward
    grid = FINE_GRID_BY_VIEW["sax"]
    edge = grid.size_px - 1.0
    points = np.array([[0.0, 40.0], [edge, 40.0], [40.0, edge]])
    decoded, _ = decode_heatmaps(render_heatmaps(points, grid.size_px, grid.sigma_px)[None])
    np.testing.assert_allclose(decoded[0], points, atol=0.15)


def test_window_centroid_decode_reads_the_centre_of_mass_near_the_peak() -> None:
    grid = FINE_GRID_BY_VIEW["sax"]
    radius_px = 12.0
    # One clean blob: the centroid is the point, as the parabola is.
    point = np.array([[40.3, 51.7]])
    maps = render_heatmaps(point, grid.size_px, grid.sigma_px)
    decoded, peak = decode_heatmaps(maps[None], centroid_radius_px=radius_px)
    np.testing.assert_allclose(decoded[0], point, atol=0.05)
    # A map spread along a line (two blobs of mass 1 and 0.5, 6 px apart, both well inside the window): the
    # centroid is their mass-weighted mean, two thirds of the way to the stronger one; the peak stays the same.
    radius_px = 20.0  # > 4 sigma beyond the weak blob, so the window does not cut its tail
    strong, weak = np.array([40.0, 40.0]), np.array([40.0, 46.0])
    spread = render_heatmaps(strong[None], grid.size_px, grid.sigma_px)[1] \
        + 0.5 * render_heatmaps(weak[None], grid.size_px, grid.sigma_px)[1]
    far = render_heatmaps(np.array([[80.0, 80.0]]), grid.size_px, grid.sigma_px)[1]  # outside the window
    probabilities = np.stack([np.zeros_like(spread), 0.5 * (spread + 0.3 * far)])[None]
    centroid, centroid_peak = decode_heatmaps(probabilities, centroid_radius_px=radius_px)
    peak_point, peak_peak = decode_heatmaps(probabilities)
    np.testing.assert_allclose(centroid[0, 0], (strong + 0.5 * weak) / 1.5, atol=0.05)
    assert abs(peak_point[0, 0, 1] - 40.0) < 1.0  # the mode sits on the strong blob
    np.testing.assert_array_equal(centroid_peak, peak_peak)
    with pytest.raises(ValueError, match="positive"):
        decode_heatmaps(probabilities, centroid_radius_px=0.0)


def test_intensity_pieces_change_the_image_as_modelled() -> None:
    rng = np.random.default_rng(6)
    flat = np.full((64, 64), 0.5, dtype=np.float32)
    shaded = CoilShading()(flat, rng, 4.0)
    assert shaded.std() > 0.01 and np.all(shaded > 0)
    corrected = ShadingCorrection()(shaded, rng, 4.0)
    assert corrected.std() / corrected.mean() < shaded.std() / shaded.mean()
    noisy = RicianNoise(max_sigma=0.1)(np.zeros((64, 64), np.float32), np.random.default_rng(1), 4.0)
    assert noisy.min() >= 0 and noisy.mean() > 0  # Rician: the magnitude of noise is positive on average
    augmented = default_intensity_augmentation()(flat, np.random.default_rng(2), 4.0)
    assert augmented.shape == flat.shape and augmented.dtype == np.float32


def test_random_convolutions_remap_texture_and_keep_the_mean_and_sd() -> None:
    image = phantom_slices(1, seed=3, empty_fraction=0.0)[0].image.astype(np.float32)
    image = normalise_intensity(image)
    looks = [RandomConvolutions()(image, np.random.default_rng(seed), 1.25) for seed in range(6)]
    for look in looks:
        assert look.dtype == np.float32 and look.shape == image.shape
        assert abs(look.mean() - image.mean()) < 1e-4 and abs(look.std() - image.std()) < 1e-4
    # not a global intensity map: pixels of one value in the image take many values in the new look
    same_value = np.isclose(image, np.median(image[image > image.mean()]), atol=0.02)
    assert max(float(look[same_value].std()) for look in looks) > 0.1 * image.std()
    torch.testing.assert_close(RandomConvolutions()(image, np.random.default_rng(0), 1.25), looks[0])


def test_random_convolutions_change_only_the_images_of_their_share_of_items() -> None:
    slices = phantom_slices(16, seed=7, empty_fraction=0.0)
    plain = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1)
    half = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1, random_convolution_fraction=0.5)
    changed = [not torch.equal(plain[i][0], half[i][0]) for i in range(len(slices))]
    assert 2 <= sum(changed) <= 14  # about half, and the rest exactly as without (the same random stream)
    for i in range(len(slices)):
        torch.testing.assert_close(plain[i][1], half[i][1])  # the targets never move


def test_dataset_is_reproducible_per_epoch_and_differs_between_epochs() -> None:
    dataset = HeatmapDataset(phantom_slices(4, seed=7), "sax", "fine", augment=True, seed=1)
    first, again = dataset[2], dataset[2]
    torch.testing.assert_close(first[0], again[0])
    dataset.set_epoch(1)
    assert not torch.equal(first[0], dataset[2][0])
    assert first[1].shape == (4, FINE_GRID_BY_VIEW["sax"].size_px, FINE_GRID_BY_VIEW["sax"].size_px)


def test_fresh_random_contrasts_redraw_the_tissues_every_epoch_and_keep_the_targets() -> None:
    slices = phantom_slices(12, seed=7, empty_fraction=0.0)
    plain = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1)
    redrawn = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1,
                             fresh_images=FreshImages(with_random_contrast, 1.0))
    for index in range(len(slices)):
        torch.testing.assert_close(redrawn[index][1], plain[index][1])  # same geometry, same landmarks
        assert not torch.equal(redrawn[index][0], plain[index][0])
        torch.testing.assert_close(redrawn[index][0], redrawn[index][0])  # reproducible within an epoch
    # the blood pool is brighter than the myocardium in the source; fresh draws put it on either side
    blood, myocardium = slices[0].mask == 1, slices[0].mask == 2
    signs = set()
    for epoch in range(12):
        redrawn.set_epoch(epoch)
        image = redrawn.item_image(0)
        signs.add(bool(image[blood].mean() > image[myocardium].mean()))
    assert signs == {True, False}


def test_fresh_random_contrasts_touch_only_their_share_and_only_slices_with_masks() -> None:
    slices = phantom_slices(40, seed=9, empty_fraction=0.0)
    half = HeatmapDataset(slices, "sax", "coarse", augment=True, seed=2,
                          fresh_images=FreshImages(with_random_contrast, 0.5))
    redrawn = sum(not np.array_equal(half.item_image(i), half.images[i]) for i in range(len(slices)))
    assert 10 <= redrawn <= 30
    unmasked = [dataclasses.replace(s, mask=None) for s in slices[:4]]
    every = HeatmapDataset(unmasked, "sax", "coarse", augment=True, seed=2,
                           fresh_images=FreshImages(with_random_contrast, 1.0))
    assert all(np.array_equal(every.item_image(i), every.images[i]) for i in range(4))
    with pytest.raises(ValueError, match="share"):
        FreshImages(with_random_contrast, 1.5)


def test_fresh_t1_maps_are_maps_in_ms_with_the_slices_landmarks() -> None:
    slices = phantom_slices(6, seed=5, empty_fraction=0.0)
    plain = HeatmapDataset(slices, "sax", "fine", augment=True, seed=3)
    maps = HeatmapDataset(slices, "sax", "fine", augment=True, seed=3,
                          fresh_images=FreshImages(synthetic_t1_slice, 1.0))
    blood, myocardium = slices[0].mask == 1, slices[0].mask == 2
    contrasts = []
    for epoch in range(12):
        maps.set_epoch(epoch)
        plain.set_epoch(epoch)
        torch.testing.assert_close(maps[0][1], plain[0][1])
        # the item is the normalised map drawn from the item's own stream; in ms its blood is longer than its
        # myocardium on a native map, shorter after contrast
        rng = np.random.default_rng([3, epoch, 0, training_module.FRESH_IMAGE_STREAM])
        rng.random()
        t1_ms = synthetic_t1_slice(slices[0], rng).image
        np.testing.assert_allclose(maps.item_image(0), normalise_intensity(t1_ms), atol=1e-6)
        contrasts.append(float(np.median(t1_ms[blood]) - np.median(t1_ms[myocardium])))
    assert max(contrasts) > 300 and min(contrasts) < 0  # a new scenario each epoch: native and post-contrast


@pytest.mark.parametrize("other_images", [{"fresh_images": FreshImages(with_random_contrast, 0.5)},
                                          {"random_convolution_fraction": 0.5}])
def test_distillation_refuses_fresh_images_and_random_convolutions(tmp_path, other_images) -> None:
    slices = phantom_slices(4, seed=3, empty_fraction=0.0)
    with pytest.raises(ValueError, match="combines with neither"):
        training_module.train_stage("coarse", slices, slices, "sax", tmp_path, 1, _validate_on_loss,
                                    teachers={"cine": torch.nn.Identity()}, **other_images)


def test_validation_slices_without_a_labelled_landmark_are_refused_before_training(tmp_path) -> None:
    # slices outside the heart only: the validation distance would be NaN, and no epoch would ever be "best"
    empty = phantom_slices(4, seed=5, empty_fraction=1.0)
    assert not training_module.has_labelled_landmark(empty)
    with pytest.raises(ValueError, match="at least one labelled landmark"):
        training_module.train_cascade(phantom_slices(4, seed=3), empty, "sax", tmp_path, 1, 1)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    dataset = HeatmapDataset(phantom_slices(8, seed=8, empty_fraction=0.0), "sax", "coarse", augment=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    targets = torch.stack([dataset[i][1] for i in range(len(dataset))])
    model = UNet(3, TINY_WIDTHS)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = heatmap_loss(model(images), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_loss_prefers_the_right_place_and_an_empty_map_for_an_absent_landmark() -> None:
    points = np.array([[10.0, 12.0], [30, 30], [np.nan, np.nan]])
    target = torch.from_numpy(render_heatmaps(points, 48, 2.0))[None]
    shifted = torch.from_numpy(render_heatmaps(points + [0.0, 3.0], 48, 2.0))[None]
    on_target = heatmap_loss(torch.log(target.clamp_min(1e-8)), target)
    off_target = heatmap_loss(torch.log(shifted.clamp_min(1e-8)), target)
    uniform = heatmap_loss(torch.zeros_like(target), target)
    assert on_target < off_target < uniform
    # a blob for the absent third landmark costs more than none
    with_false_blob = torch.from_numpy(render_heatmaps(np.array([[10.0, 12.0], [30, 30], [20, 40]]), 48, 2.0))[None]
    assert heatmap_loss(torch.log(with_false_blob.clamp_min(1e-8)), target) > on_target


def test_point_distance_loss_measures_the_reported_point_and_ignores_absent_landmarks() -> None:
    points = np.array([[20.0, 22.0], [30.0, 30.0], [np.nan, np.nan]])
    target = torch.from_numpy(render_heatmaps(points, 48, 2.0))[None]
    shifted = torch.log(torch.from_numpy(render_heatmaps(points + [0.0, 3.0], 48, 2.0))[None].clamp_min(1e-8))
    on_target = torch.log(target.clamp_min(1e-8))
    assert float(point_distance_loss(on_target, target, radius_px=8.0)) < 0.05
    assert float(point_distance_loss(shifted, target, radius_px=8.0)) == pytest.approx(3.0, abs=0.05)
    # A blob for the absent third landmark is the heatmap loss's business, not this one's.
    with_false_blob = torch.log(torch.from_numpy(
        render_heatmaps(np.array([[20.0, 22.0], [30.0, 30.0], [10.0, 40.0]]), 48, 2.0))[None].clamp_min(1e-8))
    assert float(point_distance_loss(with_false_blob, target, radius_px=8.0)) < 0.05
    logits = shifted.clone().requires_grad_(True)
    point_distance_loss(logits, target, radius_px=8.0).backward()
    # (the absent channel feels only the softmax's coupling, orders of magnitude less)
    assert logits.grad[:, 1:3].abs().sum() > 1e4 * logits.grad[:, 3].abs().sum()


def _validate_on_loss(model: torch.nn.Module) -> tuple[float, dict]:
    # a deterministic stand-in for the distance: the loss on fixed phantoms
    dataset = HeatmapDataset(phantom_slices(4, seed=11), "sax", "coarse", augment=False)
    model.eval()
    with torch.no_grad():
        images = torch.stack([dataset[i][0] for i in range(4)])
        targets = torch.stack([dataset[i][1] for i in range(4)])
        return float(heatmap_loss(model(images), targets)), {}


def test_resume_continues_from_the_saved_epoch_with_identical_results(tmp_path) -> None:
    torch.set_num_threads(1)
    train = phantom_slices(12, seed=9)
    common = dict(validate=_validate_on_loss, batch_size=4, widths=TINY_WIDTHS, max_steps_per_epoch=2)
    straight, _ = train_stage("coarse", train, train, "sax", tmp_path / "straight", 2, resume=False, **common)
    train_stage("coarse", train, train, "sax", tmp_path / "resumed", 1, resume=False, **common)
    history_after_one = torch.load(tmp_path / "resumed" / "coarse_last.pt", weights_only=False)["history"]
    resumed, _ = train_stage("coarse", train, train, "sax", tmp_path / "resumed", 2, resume=True, **common)
    checkpoint = torch.load(tmp_path / "resumed" / "coarse_last.pt", weights_only=False)
    assert checkpoint["epoch"] == 1
    assert [r["epoch"] for r in checkpoint["history"]] == [0, 1]
    assert checkpoint["history"][0] == history_after_one[0]
    straight_last = torch.load(tmp_path / "straight" / "coarse_last.pt", weights_only=False)
    for name, value in straight_last["model"].items():
        torch.testing.assert_close(checkpoint["model"][name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("hold", "halved"), [(0, True), (2, False)])
def test_learning_rate_is_not_halved_during_the_hold(tmp_path, hold: int, halved: bool) -> None:
    torch.set_num_threads(1)
    worsening = iter(range(100, 200))  # every epoch validates worse than the first

    def validate(model: torch.nn.Module) -> tuple[float, dict]:
        return float(next(worsening)), {}

    # patience 3 (plateau_patience(5)): the 4th epoch without improvement after the first halves the rate
    train_stage("coarse", phantom_slices(8, seed=13), phantom_slices(2, seed=14), "sax", tmp_path, 5,
                validate=validate, batch_size=4, widths=TINY_WIDTHS, max_steps_per_epoch=1, resume=False,
                lr=1e-3, lr_hold_epochs=hold)
    rates = [record["lr"] for record in torch.load(tmp_path / "coarse_last.pt", weights_only=False)["history"]]
    assert rates[:4] == [1e-3] * 4
    assert (rates[4] == 5e-4) is halved


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        model, _ = train_stage(
            "coarse", phantom_slices(16, seed=10), phantom_slices(2, seed=12), "sax", folder, 1,
            validate=lambda model: (math.inf, {}),  # never "best": each rank returns the weights it trained
            batch_size=4, widths=TINY_WIDTHS, max_steps_per_epoch=3, resume=False,
        )
        torch.save({name: p.detach().clone() for name, p in model.named_parameters()}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    weights = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    torch.manual_seed(0)
    initial = UNet(3, TINY_WIDTHS)  # train_stage seeds 0 before building the model
    changed = False
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)
        changed |= not torch.equal(value, dict(initial.named_parameters())[name].detach())
    assert changed, "the ranks' weights equal the initial ones: no training step happened"


@pytest.mark.parametrize("stage", ["coarse", "fine"])
def test_dataset_rejects_landmarks_of_the_wrong_shape(stage: str) -> None:
    slice_ = phantom_slices(1)[0]
    slice_.landmarks_rc = np.zeros((2, 2))
    with pytest.raises(ValueError, match="landmarks_rc must be"):
        HeatmapDataset([slice_], "sax", stage, augment=False)


def test_fine_tuning_builds_the_network_of_the_weights_it_starts_from(tmp_path) -> None:
    torch.set_num_threads(1)
    source = UNet(3, (6, 12, 24)).state_dict()
    assert unet_widths(source) == (6, 12, 24)
    model, _ = train_stage("coarse", phantom_slices(8, seed=13), phantom_slices(2, seed=14), "sax", tmp_path, 1,
                           validate=_validate_on_loss, init_state=source, batch_size=4, widths=TINY_WIDTHS,
                           max_steps_per_epoch=1, resume=False)
    assert unet_widths(model.state_dict()) == (6, 12, 24)
    with pytest.raises(ValueError, match="not a UNet"):
        unet_widths({"weight": torch.zeros(1)})


def _saved_coarse_weights(path) -> dict:
    weights = UNet(3, (6, 12, 24)).state_dict()
    torch.save({"model": weights}, path)
    return weights


def _fine_stage_only(run_dir, coarse_source, epochs_fine: int, resume: bool) -> tuple:
    return train_cascade(phantom_slices(8, seed=15), phantom_slices(3, seed=16, empty_fraction=0.0), "sax", run_dir,
                         0, epochs_fine, init_coarse_from=coarse_source, batch_size=4, widths_fine=TINY_WIDTHS,
                         max_steps_per_epoch=1, resume=resume)


def test_a_coarse_stage_given_no_epochs_is_kept_and_only_the_fine_stage_trains(tmp_path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(3)
    coarse_weights = _saved_coarse_weights(tmp_path / "coarse_source.pt")
    cascade, metrics = _fine_stage_only(tmp_path / "run", tmp_path / "coarse_source.pt", 1, resume=False)
    for key, value in coarse_weights.items():
        torch.testing.assert_close(cascade.coarse.state_dict()[key], value)
    assert unet_widths(cascade.fine.state_dict()) == TINY_WIDTHS
    assert metrics["coarse"]["epoch"] == -1 and metrics["fine"]["epoch"] == 0
    # the run folder holds both stages, so it exports and resumes like any other
    reloaded = load_cascade(tmp_path / "run", "sax")
    torch.testing.assert_close(reloaded.coarse.state_dict()["head.weight"], coarse_weights["head.weight"])
    resumed, _ = _fine_stage_only(tmp_path / "run", tmp_path / "coarse_source.pt", 2, resume=True)
    torch.testing.assert_close(resumed.coarse.state_dict()["head.weight"], coarse_weights["head.weight"])
    # a fresh run into the same folder keeps the weights it is given, not the earlier run's coarse checkpoint
    other_weights = _saved_coarse_weights(tmp_path / "other_coarse.pt")
    fresh, _ = _fine_stage_only(tmp_path / "run", tmp_path / "other_coarse.pt", 1, resume=False)
    torch.testing.assert_close(fresh.coarse.state_dict()["head.weight"], other_weights["head.weight"])


@pytest.mark.parametrize(("epochs_coarse", "epochs_fine", "stage"), [(0, 1, "coarse"), (1, 0, "fine")])
def test_a_stage_given_no_epochs_needs_weights(tmp_path, epochs_coarse, epochs_fine, stage) -> None:
    torch.set_num_threads(1)
    with pytest.raises(ValueError, match=f"the {stage} stage is given 0 epochs and no weights"):
        train_cascade(phantom_slices(8, seed=15), phantom_slices(2, seed=16), "sax", tmp_path, epochs_coarse,
                      epochs_fine, batch_size=4, widths_coarse=TINY_WIDTHS, widths_fine=TINY_WIDTHS,
                      max_steps_per_epoch=1, resume=False)


class _FixedTeacher(torch.nn.Module):
    """A stand-in for a shipped cascade: the same probability map for every input, whatever the stage."""

    def __init__(self, probabilities: torch.Tensor) -> None:
        super().__init__()
        self.probabilities = probabilities

    def coarse_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities.expand(len(x), -1, -1, -1)

    def fine_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self.probabilities.expand(len(x), -1, -1, -1)


def _copy_of(slice_: object, image: np.ndarray) -> object:
    return dataclasses.replace(slice_, image=image, source_image=slice_.image)


def test_distillation_items_show_the_teacher_the_source_image_through_the_students_geometry() -> None:
    real = phantom_slices(1, seed=21, empty_fraction=0.0)[0]
    copy = _copy_of(real, (real.image.max() - real.image) ** 1.3)  # a different (inverted) contrast
    student_of_real = DistillationDataset([real], "sax", "fine", seed=3, teacher_sequences=["cine"])
    student_of_copy = DistillationDataset([copy], "sax", "fine", seed=3, teacher_sequences=["cine"])
    student_of_real.set_epoch(2)
    student_of_copy.set_epoch(2)
    image, target, teacher_image, teacher_index = student_of_copy[0]
    # the copy's teacher sees the real image, on the same grid as the real slice's item
    torch.testing.assert_close(teacher_image, student_of_real[0][2])
    torch.testing.assert_close(target, student_of_real[0][1])
    assert not torch.allclose(image, teacher_image, atol=0.1)
    assert int(teacher_index) == 0
    # without intensity augmentation a real slice's teacher input is the student's input itself
    student_of_real.intensity = lambda grid_image, rng, pixel_mm: grid_image
    torch.testing.assert_close(student_of_real[0][0], student_of_real[0][2])


def test_a_copy_and_its_source_slice_share_the_teachers_image() -> None:
    real = phantom_slices(1, seed=24, empty_fraction=0.0)[0]
    dataset = DistillationDataset([real, _copy_of(real, real.image[::-1].copy())], "sax", "coarse", seed=0,
                                  teacher_sequences=["cine"])
    assert dataset.teacher_images[1] is dataset.teacher_images[0] is dataset.images[0]
    alone = DistillationDataset([_copy_of(real, real.image[::-1].copy())], "sax", "coarse", seed=0,
                                teacher_sequences=["cine"])
    np.testing.assert_array_equal(alone.teacher_images[0], dataset.teacher_images[0])


def test_distillation_needs_a_teacher_for_every_sequence() -> None:
    with pytest.raises(ValueError, match="no teacher for the \\['cine'\\] slices"):
        DistillationDataset(phantom_slices(2, seed=22), "sax", "coarse", seed=0, teacher_sequences=["lge"])


def test_distilled_targets_mix_labels_and_each_items_own_teacher() -> None:
    size = 8
    targets = torch.zeros(3, 4, size, size)
    targets[:, 0] = 1.0
    first, second = torch.zeros(1, 4, size, size), torch.zeros(1, 4, size, size)
    first[:, 1], second[:, 2] = 1.0, 1.0
    teachers = [_FixedTeacher(first), _FixedTeacher(second)]
    index = torch.tensor([1, 0, 1])
    mixed = distilled_targets(targets, torch.zeros(3, 1, size, size), index, teachers, "fine", weight=0.25)
    torch.testing.assert_close(mixed[:, 0], torch.full((3, size, size), 0.75))
    torch.testing.assert_close(mixed[1, 1], torch.full((size, size), 0.25))
    torch.testing.assert_close(mixed[[0, 2], 2], torch.full((2, size, size), 0.25))
    torch.testing.assert_close(mixed.sum(dim=1), torch.ones(3, size, size))  # still a distribution per pixel


def test_distillation_pulls_the_student_toward_its_teacher(tmp_path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    slices = phantom_slices(8, seed=23, empty_fraction=0.0)
    # a teacher unlike the labels: the same mixture at every pixel
    size = COARSE_GRID.size_px
    teacher = _FixedTeacher(torch.tensor([0.25, 0.45, 0.15, 0.15])[None, :, None, None].expand(1, 4, size, size))
    init = UNet(3, TINY_WIDTHS).state_dict()
    probe = torch.stack([HeatmapDataset(slices, "sax", "coarse", augment=False)[i][0] for i in range(4)])

    def disagreement(model: torch.nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            student = torch.log_softmax(model(probe), dim=1)
            reference = teacher.coarse_probabilities(probe)
            return float((reference * (torch.log(reference) - student)).sum(dim=1).mean())

    def train(teachers: dict | None, folder: str) -> float:
        model, _ = train_stage("coarse", slices, slices[:2], "sax", tmp_path / folder, 15,
                               validate=lambda model: (disagreement(model), {}), init_state=init, lr=3e-3,
                               batch_size=4, resume=False, teachers=teachers, distil_weight=1.0)
        return disagreement(model)

    # the same steps from the same start: the teacher's targets end closer to it than the start and the labels' do
    start = UNet(3, TINY_WIDTHS)
    start.load_state_dict(init)
    before, distilled, from_labels = disagreement(start), train({"cine": teacher}, "distilled"), train(None, "labels")
    assert distilled < 0.5 * min(before, from_labels), (before, distilled, from_labels)


def _with_and_without_term(after_steps: Callable[[dict, float], float], weight: float) -> tuple[float, float]:
    """``after_steps(initial weights, weight of a loss term)`` summed over three random starts, with the term at
    ``weight`` and without it: one short run from one start swings with the CPU's arithmetic."""
    with_term = without_term = 0.0
    for seed in range(3):
        torch.manual_seed(seed)
        init = UNet(3, TINY_WIDTHS).state_dict()
        with_term += after_steps(init, weight)
        without_term += after_steps(init, 0.0)
    return with_term, without_term


def test_the_distance_term_pulls_the_reported_points_toward_the_labels() -> None:
    dataset = HeatmapDataset(phantom_slices(8, seed=21, empty_fraction=0.0), "sax", "fine", augment=False)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    targets = torch.stack([dataset[i][1] for i in range(len(dataset))])
    radius_px = FINE_CENTROID_RADIUS_MM / FINE_GRID_BY_VIEW["sax"].pixel_mm

    def distance_after_steps(init: dict, distance_weight: float) -> float:
        model = UNet(3, TINY_WIDTHS)
        model.load_state_dict(init)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(45):
            logits = model(images)
            loss = heatmap_loss(logits, targets) + distance_weight * point_distance_loss(logits, targets, radius_px)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            return float(point_distance_loss(model(images), targets, radius_px))

    # The same steps from the same starts: with the term, the reported points end nearer their labels (a single
    # start's ratio was 0.28-0.97 across starts and machines).
    with_term, without_term = _with_and_without_term(distance_after_steps, 0.3)
    assert with_term < 0.8 * without_term, (with_term, without_term)  # measured: 53.0 against 91.0 px


def test_train_stage_adds_the_distance_term_in_mm_to_the_fine_stage_only(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    calls = []

    def recording_distance(logits, target, radius_px):
        calls.append((radius_px, float(target[:, 1:].sum(dim=(2, 3)).max())))
        return point_distance_loss(logits, target, radius_px)

    monkeypatch.setattr(training_module, "point_distance_loss", recording_distance)
    slices = phantom_slices(4, seed=23, empty_fraction=0.0)
    train_stage("fine", slices, slices[:2], "sax", tmp_path / "fine", 1, validate=_validate_on_loss, batch_size=4,
                widths=TINY_WIDTHS, resume=False, distance_weight=0.3)
    # one step, with the window in fine-grid pixels and the label heatmaps (blobs of ~2 pi sigma^2 mass)
    sigma = FINE_GRID_BY_VIEW["sax"].sigma_px
    assert [radius for radius, _ in calls] == [pytest.approx(FINE_CENTROID_RADIUS_MM / 1.25)]
    assert calls[0][1] == pytest.approx(2 * math.pi * sigma**2, rel=0.05)
    for stage, weight in (("coarse", 0.3), ("fine", -0.1), ("fine", math.nan)):
        with pytest.raises(ValueError, match="distance"):
            train_stage(stage, slices, slices[:2], "sax", tmp_path / "bad", 1, validate=_validate_on_loss,
                        batch_size=4, widths=TINY_WIDTHS, resume=False, distance_weight=weight)


def _without_intensity_augmentation(dataset: HeatmapDataset) -> HeatmapDataset:
    dataset.intensity = lambda image, rng, pixel_mm: image
    return dataset


def test_consistency_pairs_are_the_real_item_and_a_second_view_through_the_same_geometry() -> None:
    slices = phantom_slices(6, seed=7, empty_fraction=0.0)
    plain = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1)
    paired = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1, consistency_pairs=True,
                            fresh_images=FreshImages(with_random_contrast, 1.0))
    for index in range(len(slices)):
        first, target, second = paired[index]
        # the first view is the plain item, whatever share of items is given fresh contrasts
        torch.testing.assert_close(first, plain[index][0])
        torch.testing.assert_close(target, plain[index][1])
        assert not torch.equal(second, first)
    # without the intensity augmentation, the second view is the fresh image through the first's geometry ...
    bare_paired = _without_intensity_augmentation(HeatmapDataset(
        slices, "sax", "fine", augment=True, seed=1, consistency_pairs=True,
        fresh_images=FreshImages(with_random_contrast, 1.0)))
    bare_redrawn = _without_intensity_augmentation(HeatmapDataset(
        slices, "sax", "fine", augment=True, seed=1, fresh_images=FreshImages(with_random_contrast, 1.0)))
    torch.testing.assert_close(bare_paired[2][2], bare_redrawn[2][0])
    # ... and with no fresh contrasts it is the real image again, the two views apart only in their intensities
    bare_real = _without_intensity_augmentation(HeatmapDataset(slices, "sax", "fine", augment=True, seed=1,
                                                               consistency_pairs=True))
    torch.testing.assert_close(bare_real[2][2], bare_real[2][0])
    real = HeatmapDataset(slices, "sax", "fine", augment=True, seed=1, consistency_pairs=True)
    assert not torch.equal(real[2][2], real[2][0])
    with pytest.raises(ValueError, match="need augment"):
        HeatmapDataset(slices, "sax", "fine", augment=False, consistency_pairs=True)


def test_consistency_loss_is_zero_for_equal_maps_symmetric_and_bounded() -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 8, 8, generator=generator)
    other = torch.randn(2, 4, 8, 8, generator=generator)
    assert float(consistency_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(consistency_loss(logits, logits + 5.0)) == pytest.approx(0.0, abs=1e-6)  # same softmax
    assert float(consistency_loss(logits, other)) == pytest.approx(float(consistency_loss(other, logits)))
    assert 0.0 < float(consistency_loss(logits, other)) < math.log(2.0)
    # maps that put all of each pixel's mass on different channels are as far apart as the divergence goes
    apart = torch.zeros(1, 2, 4, 4)
    apart[:, 0] = 50.0
    assert float(consistency_loss(apart, apart.flip(1))) == pytest.approx(math.log(2.0), rel=1e-4)


def test_consistency_toward_the_first_view_pulls_only_the_second() -> None:
    generator = torch.Generator().manual_seed(5)
    first = torch.randn(2, 4, 8, 8, generator=generator).requires_grad_()
    second = torch.randn(2, 4, 8, 8, generator=generator).requires_grad_()
    loss = consistency_loss(first, second, toward_first=True)
    p, q = torch.softmax(first, dim=1), torch.softmax(second, dim=1)
    expected = (p * (p.log() - q.log())).sum(dim=1).mean()  # KL(first || second), averaged over pixels
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    loss.backward()
    assert first.grad is None and second.grad.abs().sum() > 0
    same_maps = consistency_loss(first, first.detach() + 2.0, toward_first=True)
    assert float(same_maps.detach()) == pytest.approx(0.0, abs=1e-6)
    # a step on the second view brings it toward the first
    with torch.no_grad():
        moved = second - 5.0 * second.grad
    assert float(consistency_loss(first, moved, toward_first=True).detach()) < float(loss.detach())


def test_train_stage_runs_both_views_in_one_pass_and_adds_their_divergence(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    calls, offset = [], [0.0]

    def recording_consistency(logits, paired_logits, toward_first):
        calls.append((tuple(logits.shape), tuple(paired_logits.shape), toward_first))
        return consistency_loss(logits, paired_logits, toward_first) + offset[0]

    monkeypatch.setattr(training_module, "consistency_loss", recording_consistency)
    slices = phantom_slices(4, seed=23, empty_fraction=0.0)

    def first_step_loss(folder: str) -> float:
        train_stage("fine", slices, slices[:2], "sax", tmp_path / folder, 1, validate=_validate_on_loss,
                    batch_size=4, widths=TINY_WIDTHS, resume=False, consistency_weight=10.0,
                    consistency_toward_real=True, fresh_images=FreshImages(with_random_contrast, 0.5))
        return torch.load(tmp_path / folder / "fine_last.pt", weights_only=False)["history"][0]["train_loss"]

    plain_loss = first_step_loss("fine")
    size = FINE_GRID_BY_VIEW["sax"].size_px
    assert calls == [((4, 4, size, size), (4, 4, size, size), True)]  # one step: the batch's 4 items, each view
    offset[0] = 1.0  # the same step with the term 1 higher: the loss rises by the weight
    assert first_step_loss("offset") - plain_loss == pytest.approx(10.0, rel=1e-4)
    for weight in (-1.0, math.nan):
        with pytest.raises(ValueError, match="consistency_weight"):
            train_stage("fine", slices, slices[:2], "sax", tmp_path / "bad", 1, validate=_validate_on_loss,
                        batch_size=4, widths=TINY_WIDTHS, resume=False, consistency_weight=weight)
    with pytest.raises(ValueError, match="distillation"):
        train_stage("fine", slices, slices[:2], "sax", tmp_path / "bad", 1, validate=_validate_on_loss,
                    batch_size=4, widths=TINY_WIDTHS, resume=False, consistency_weight=1.0,
                    teachers={"cine": torch.nn.Identity()})


def test_the_consistency_term_brings_the_maps_of_two_contrasts_together() -> None:
    slices = phantom_slices(8, seed=31, empty_fraction=0.0)
    dataset = HeatmapDataset(slices, "sax", "fine", augment=True, seed=4, consistency_pairs=True,
                             fresh_images=FreshImages(with_random_contrast, 1.0))
    items = [dataset[i] for i in range(len(slices))]
    images, targets, seconds = (torch.stack(parts) for parts in zip(*items, strict=True))

    def divergence_after_steps(init: dict, weight: float) -> float:
        model = UNet(3, TINY_WIDTHS)
        model.load_state_dict(init)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(30):
            logits = model(torch.cat([images, seconds]))
            loss = heatmap_loss(logits, torch.cat([targets, targets])) + weight * consistency_loss(*logits.chunk(2))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            return float(consistency_loss(model(images), model(seconds)))

    with_term, without_term = _with_and_without_term(divergence_after_steps, 30.0)
    assert with_term < 0.7 * without_term, (with_term, without_term)  # measured: 0.19 of it
