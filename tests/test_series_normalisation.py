"""scripts/series_normalisation_experiment.py: BatchNorms that normalise with a blend of their training statistics
and a series' own (docs/t1.md, "Normalisation statistics from the series itself")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from myops_stack import load_myops_stack
from script_modules import load_script
from torch import nn
from torch.nn import functional

from cmr_landmark.detector import Detector
from cmr_landmark.model_store import find_model
from cmr_landmark.network import LandmarkCascade
from cmr_landmark.training import load_stage


@pytest.fixture
def script():
    return load_script("series_normalisation_experiment")


def trained_batch_norm() -> nn.BatchNorm2d:
    torch.manual_seed(0)
    batch_norm = nn.BatchNorm2d(3)
    batch_norm.running_mean.copy_(torch.randn(3))
    batch_norm.running_var.copy_(torch.rand(3) + 0.5)
    batch_norm.weight.data.copy_(torch.randn(3))
    batch_norm.bias.data.copy_(torch.randn(3))
    return batch_norm.eval()


def test_training_statistics_until_adapted_then_the_blend(script) -> None:
    batch_norm = trained_batch_norm()
    series = torch.randn(5, 3, 8, 8) * 3 + 2
    adaptive = script.SeriesBatchNorm(batch_norm)
    torch.testing.assert_close(adaptive(series), batch_norm(series))
    adaptive.collecting = True
    torch.testing.assert_close(adaptive(series), batch_norm(series))  # collecting does not change the output
    adaptive.adapt(0.25)
    variance, mean = torch.var_mean(series, dim=(0, 2, 3), correction=0)
    blended = functional.batch_norm(series, 0.25 * batch_norm.running_mean + 0.75 * mean,
                                    0.25 * batch_norm.running_var + 0.75 * variance, batch_norm.weight,
                                    batch_norm.bias, eps=batch_norm.eps)
    torch.testing.assert_close(adaptive(series), blended, rtol=1e-4, atol=1e-4)


def test_online_with_no_prior_is_batch_statistics(script) -> None:
    batch_norm = trained_batch_norm()
    series = torch.randn(4, 3, 8, 8) * 2 - 1
    adaptive = script.SeriesBatchNorm(batch_norm)
    adaptive.reset(online_training_share=0.0)
    expected = functional.batch_norm(series, None, None, batch_norm.weight, batch_norm.bias, training=True,
                                     eps=batch_norm.eps)
    torch.testing.assert_close(adaptive(series), expected, rtol=1e-4, atol=1e-4)


def test_the_control_is_the_shipped_model(script) -> None:
    """Without adaptation the unfrozen network (the file's fp16 training state) finds what the shipped file finds."""
    spec = find_model("sax", "any", name="sax_any")
    stack = load_myops_stack()
    cascade = LandmarkCascade(load_stage(spec.file, "coarse", "sax"), load_stage(spec.file, "fine", "sax")).eval()
    control = script.SeriesAdaptedDetector(Detector(spec, use_bf16=False), cascade, None)
    assert len(control.batch_norms) == sum(isinstance(m, script.SeriesBatchNorm) for m in cascade.modules()) > 0
    images = [s.image for s in stack]
    found = control.detect(images, stack[0].pixel_spacing_mm, probability_threshold=0.0)
    shipped = Detector(spec, use_bf16=False).detect(images, stack[0].pixel_spacing_mm, probability_threshold=0.0)
    for ours, theirs in zip(found, shipped, strict=True):
        for name in spec.landmarks:
            assert abs(ours[name].probability - theirs[name].probability) < 0.02
            assert np.hypot(ours[name].row - theirs[name].row, ours[name].col - theirs[name].col) < 0.5


@pytest.mark.parametrize("online", [False, True])
def test_adaptation_moves_the_maps_and_a_strong_prior_keeps_them(script, online: bool) -> None:
    """With no prior the series' own statistics change what the network answers; with a prior of a billion images
    it answers as without adaptation."""
    spec = find_model("sax", "any", name="sax_any")
    stack = load_myops_stack()
    images, spacing = [s.image for s in stack], stack[0].pixel_spacing_mm

    def probabilities(prior_images: float | None) -> np.ndarray:
        cascade = LandmarkCascade(load_stage(spec.file, "coarse", "sax"), load_stage(spec.file, "fine", "sax")).eval()
        detector = script.SeriesAdaptedDetector(Detector(spec, use_bf16=False), cascade, prior_images, online)
        found = detector.detect(images, spacing, probability_threshold=0.0)
        return np.array([[f[name].probability for name in spec.landmarks] for f in found])

    control = probabilities(None)
    assert np.abs(probabilities(0.0) - control).max() > 0.05
    np.testing.assert_allclose(probabilities(1e9), control, atol=1e-4)
