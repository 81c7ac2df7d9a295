"""Tissue-guided presence: the fine stage also segments the tissues the landmark rule is defined on, and the
Detector reports a landmark only where that rule finds it on the predicted tissue map."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from sax_phantom import phantom_slices

from cmr_landmark.config import COARSE_GRID, FINE_GRID_BY_VIEW, TISSUE_CLASSES
from cmr_landmark.detector import Detector
from cmr_landmark.export import export_cascade
from cmr_landmark.heatmaps import decode_heatmaps
from cmr_landmark.landmarks import derive_sax_landmarks
from cmr_landmark.model_store import ModelError, find_model
from cmr_landmark.network import LandmarkCascade, UNet, unet_tissue_classes
from cmr_landmark.tissue import tissue_landmarks
from cmr_landmark.training import IGNORE_TISSUE, HeatmapDataset, tissue_loss, with_head_of

TINY_WIDTHS = (8, 16)
FINE = FINE_GRID_BY_VIEW["sax"]


def rule_labelled_phantoms(n: int, seed: int) -> list:
    """Phantom slices whose landmarks are derived from their masks by the labels' rule (as the public sets')."""
    return [dataclasses.replace(s, landmarks_rc=derive_sax_landmarks(s.mask, pixel_spacing_mm=s.pixel_spacing_mm))
            for s in phantom_slices(n, seed=seed, empty_fraction=0.0)]


def test_the_tissue_target_follows_the_augmented_geometry_mirrors_included() -> None:
    # The rule applied to the resampled tissue target must give the heatmap target's points: same rotation, scale,
    # shift, and after a mirror the same A/P swap (the rule's clockwise end is the mirrored image's anterior end).
    dataset = HeatmapDataset(rule_labelled_phantoms(6, seed=31), "sax", "fine", augment=True, seed=2, tissue=True)
    mirrors = 0
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item = dataset.augmented_item(index)
            mirrors += item.affine.mirror
            assert item.tissue.dtype == torch.int64 and set(item.tissue.unique().tolist()) <= {0, 1, 2, 3}
            from_target, _ = decode_heatmaps(item.target[None])
            from_tissue = derive_sax_landmarks(item.tissue.numpy(), pixel_spacing_mm=(FINE.pixel_mm, FINE.pixel_mm))
            # the phantom's 2 mm pixels resampled to 1.25 mm move an arc end by about a source pixel
            assert np.abs(from_tissue - from_target[0]).max() < 3.0, (epoch, index)
    assert mirrors > 0


def test_a_slice_without_mask_is_ignored_by_the_tissue_loss() -> None:
    slices = [dataclasses.replace(s, mask=None) for s in phantom_slices(1, seed=3, empty_fraction=0.0)]
    _, _, tissue = HeatmapDataset(slices, "sax", "fine", augment=False, tissue=True)[0]
    assert torch.all(tissue == IGNORE_TISSUE)
    logits = torch.randn(1, len(TISSUE_CLASSES), *tissue.shape, requires_grad=True)
    loss = tissue_loss(logits, tissue[None])
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_tissue_loss_prefers_the_right_map() -> None:
    (slice_,) = phantom_slices(1, seed=4, empty_fraction=0.0)
    _, _, labels = HeatmapDataset([slice_], "sax", "fine", augment=False, tissue=True)[0]
    one_hot = torch.nn.functional.one_hot(labels, len(TISSUE_CLASSES)).permute(2, 0, 1)[None].float()
    right = tissue_loss(8.0 * one_hot, labels[None])
    shifted = tissue_loss(8.0 * one_hot.roll(4, dims=-1), labels[None])
    uniform = tissue_loss(torch.zeros_like(one_hot), labels[None])
    assert right < shifted < uniform
    half_ignored = labels.clone()
    half_ignored[:, : labels.shape[1] // 2] = IGNORE_TISSUE
    # ignored pixels do not count: a map wrong only there costs what a right one does
    wrong_where_ignored = one_hot.clone()
    wrong_where_ignored[..., : labels.shape[1] // 2] = one_hot.roll(4, dims=-1)[..., : labels.shape[1] // 2]
    torch.testing.assert_close(tissue_loss(8.0 * wrong_where_ignored, half_ignored[None]),
                               tissue_loss(8.0 * one_hot, half_ignored[None]))


def test_tissue_landmarks_apply_the_labels_rule_to_the_most_probable_tissue() -> None:
    slices = rule_labelled_phantoms(3, seed=5)
    masks = np.stack([s.mask for s in slices])
    masks[2, masks[2] == 3] = 0  # no RV: no insertion points, the LV centre stays
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(masks.astype(np.int64)), 4).permute(0, 3, 1, 2).float()
    probabilities = 0.1 + 0.6 * one_hot  # not a distribution per pixel, but the argmax is the mask
    found = tissue_landmarks(probabilities, "sax", pixel_mm=2.0)
    for k in range(2):
        np.testing.assert_allclose(found[k], slices[k].landmarks_rc)
    assert np.all(np.isnan(found[2, :2])) and np.all(np.isfinite(found[2, 2]))


def test_fine_tuning_adds_tissue_channels_and_keeps_the_heatmap_head() -> None:
    torch.manual_seed(0)
    heatmap_only = UNet(3, TINY_WIDTHS).state_dict()
    with_tissue = UNet(3, TINY_WIDTHS, tissue_classes=len(TISSUE_CLASSES))
    fitted = with_head_of(heatmap_only, with_tissue)
    with_tissue.load_state_dict(fitted)
    torch.testing.assert_close(with_tissue.head.weight[:4], heatmap_only["head.weight"])
    torch.testing.assert_close(with_tissue.encoders[0][0].weight, heatmap_only["encoders.0.0.weight"])
    assert unet_tissue_classes(with_tissue.state_dict(), 3) == 4 and unet_tissue_classes(heatmap_only, 3) == 0


def _export(folder, tissue_channels: int, tissue_presence: bool) -> Detector:
    torch.manual_seed(1)
    cascade = LandmarkCascade(UNet(3, TINY_WIDTHS), UNet(3, TINY_WIDTHS, tissue_classes=tissue_channels)).eval()
    if tissue_channels:
        with torch.no_grad():  # every pixel LV blood pool: an LV centre, and no RV to insert into
            cascade.fine.head.bias[4 + TISSUE_CLASSES.index("LV blood pool")] = 50.0
    export_cascade(cascade, "tissue_test", "sax", "cine", COARSE_GRID, FINE, 0.0, folder, mirror_average=True,
                   tissue_presence=tissue_presence)
    return Detector(find_model("sax", "cine", name="tissue_test", folder=folder))


def test_detector_reports_only_what_the_exported_tissue_map_shows(tmp_path) -> None:
    detector = _export(tmp_path, len(TISSUE_CLASSES), tissue_presence=True)
    assert detector.spec.tissue_presence
    slices = rule_labelled_phantoms(4, seed=6)
    images, spacing = [s.image for s in slices], slices[0].pixel_spacing_mm
    located = detector.locate(images, spacing)
    np.testing.assert_array_equal(located.tissue_present, [[False, False, True]] * len(slices))
    found = detector.detect(images, spacing, probability_threshold=0.0)
    shown = np.array([[result[name] is not None for name in detector.spec.landmarks] for result in found])
    np.testing.assert_array_equal(shown, located.tissue_present)
    heatmaps, tissue = detector.fine_outputs(np.zeros((2, FINE.size_px, FINE.size_px), np.float32))
    assert heatmaps.shape[1] == 4 and tissue.shape[1] == len(TISSUE_CLASSES)
    np.testing.assert_allclose(tissue.sum(dim=1), 1.0, atol=1e-5)


def test_tissue_presence_needs_tissue_channels(tmp_path) -> None:
    with pytest.raises(ValueError, match="tissue channels"):
        _export(tmp_path, 0, tissue_presence=True)
    plain = _export(tmp_path, 0, tissue_presence=False)
    assert np.all(plain.locate([np.ones((64, 64))], (1.5, 1.5)).tissue_present)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["models"][0]["tissue_presence"] = "yes"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="tissue_presence must be true or false"):
        find_model("sax", "cine", folder=tmp_path)
