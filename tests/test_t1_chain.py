"""The MOLLI chain end to end: a synthetic T1-map series (real MyoPS stack -> ms maps -> ISMRMRD real images),
with the SD maps a fitting chain sends beside them, replayed through the gadget over the real socket with the
parameters of xml_configs/cmr_landmark_molli_t1.xml."""

from __future__ import annotations

import dataclasses
import json

import ismrmrd
import numpy as np
import pytest
from mrd_stream_helpers import export_throwaway_model
from myops_stack import SLICE_SPACING_MM, load_myops_stack

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.geometry import angle_between_deg, anterior_direction_in_image
from cmr_landmark.io import list_image_groups, read_ismrmrd_images, write_ismrmrd_images
from cmr_landmark.measures import anterior_rvi_direction_deg, rv_insertion_angle_deg
from cmr_landmark.model_choice import header_texts, sequence_from_texts, view_from_texts
from cmr_landmark.model_store import find_model
from cmr_landmark.replay_cli import main_replay
from cmr_landmark.synth.t1 import MAX_T1_MS
from cmr_landmark.synth.t1_series import synthetic_t1_series, write_t1_map_ismrmrd

# The chain file's parameters, the threshold aside: the model's own (chosen on its training images) lies close to
# the peak probability its insertion points reach on some of these three maps, and this test checks what comes back
# and where, not the choice of threshold.
MOLLI_CHAIN = ["--config", str(REPO_ROOT / "xml_configs" / "cmr_landmark_molli_t1.xml"),
               "--set", "probability_threshold=0.5"]
SD_MAP_SERIES = 2
# What the shipped T1 model must reach on these maps (its card: 2-8 mm mean per landmark on synthetic validation maps)
MAX_DISTANCE_MM = 12.0
MAX_ANGLE_ERROR_DEG = 30.0


@pytest.fixture(scope="module")
def stack():
    return load_myops_stack()


@pytest.fixture(scope="module")
def t1_map_file(stack, tmp_path_factory):
    path = tmp_path_factory.mktemp("molli") / "molli_t1map.h5"
    series = synthetic_t1_series(stack, seed=3, slice_spacing_mm=SLICE_SPACING_MM, field_strength_t=1.5,
                                 post_contrast=False)
    write_t1_map_ismrmrd(series, path)
    return path


@pytest.fixture(scope="module")
def t1_and_sd_map_file(t1_map_file, tmp_path_factory):
    """Each map followed by its SD map, as a MOLLI fitting chain sends them (GADGETRON_DataRole T1SD, a series of
    their own; here the map scaled down, a stand-in with the same anatomy), in one image group the replay sends."""
    header, maps = read_ismrmrd_images(t1_map_file)
    sd_maps = []
    for source in maps:
        sd_map = ismrmrd.Image.from_array(source.data * np.float32(0.05), transpose=False)
        sd_map.setHead(source.getHead())
        sd_map.image_series_index = SD_MAP_SERIES
        sd_map.meta = ismrmrd.Meta({**source.meta, "GADGETRON_DataRole": "T1SD"})
        sd_maps.append(sd_map)
    path = tmp_path_factory.mktemp("molli_sd") / "molli_t1_and_sd.h5"
    write_ismrmrd_images(path, header, {"image_1": [image for pair in zip(maps, sd_maps, strict=True)
                                                    for image in pair]})
    return path


def test_t1_map_file_is_a_sax_molli_map_in_ms(t1_map_file, stack):
    header, images = read_ismrmrd_images(t1_map_file)
    assert len(images) == len(stack)
    texts = header_texts(header)
    assert view_from_texts(texts) == "sax" and sequence_from_texts(texts) == "t1"
    for image, source in zip(images, stack, strict=True):
        assert image.image_type == ismrmrd.IMTYPE_REAL
        assert image.meta["GADGETRON_DataRole"] == "T1"  # as Gadgetron's fitted maps: the chain's data_roles chooses it
        assert image.data.dtype == np.float32 and image.data.shape[-2:] == source.image.shape
        t1_ms = image.data.reshape(source.image.shape)
        assert 0.0 <= t1_ms.min() and t1_ms.max() <= MAX_T1_MS
        myocardium = (source.mask == 2) & (source.pathology == 0)
        assert 850 < np.median(t1_ms[myocardium]) < 1150  # native myocardium at 1.5 T, in ms
    # image "up" is the patient's anterior, as the standard short-axis display the fixture is in
    np.testing.assert_allclose(anterior_direction_in_image(tuple(images[0].read_dir), tuple(images[0].phase_dir)),
                               (-1.0, 0.0), atol=1e-6)


def test_uint16_maps_are_written_as_scanners_store_them(stack, tmp_path):
    path = tmp_path / "molli_uint16.h5"
    write_t1_map_ismrmrd(synthetic_t1_series(stack[:1], seed=1, as_uint16=True), path)
    _, images = read_ismrmrd_images(path)
    assert images[0].data.dtype == np.uint16 and images[0].image_type == ismrmrd.IMTYPE_REAL


def test_series_needs_labelled_slices_of_one_shape(stack):
    with pytest.raises(ValueError, match="no slices"):
        synthetic_t1_series([], seed=0)
    cropped = dataclasses.replace(stack[0], image=stack[0].image[:-4], mask=stack[0].mask[:-4],
                                  pathology=stack[0].pathology[:-4])
    with pytest.raises(ValueError, match="one shape"):
        synthetic_t1_series([stack[1], cropped], seed=0)


def test_gadget_picks_the_t1_model_from_the_header_words(t1_map_file, stack, tmp_path, monkeypatch):
    # Wire and model choice only (an untrained model): with view/sequence on auto the MOLLI naming must select
    # the T1 model over the cine one.
    folder = tmp_path / "models"
    export_throwaway_model(folder, "sax", "cine")
    t1_name = export_throwaway_model(folder, "sax", "t1")
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(folder))  # inherited by the gadget process
    out, report_dir = tmp_path / "out.h5", tmp_path / "report"
    argv = [str(t1_map_file), "--out", str(out), "--report-dir", str(report_dir), "--set", "view=auto",
            "--set", "sequence=auto"]
    assert main_replay(argv) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert [r["model"] for r in report["images"]] == [t1_name] * len(stack)
    assert all(r["status"] == "ok" for r in report["images"])


def test_molli_chain_returns_landmarks_angle_and_orientation(t1_map_file, t1_and_sd_map_file, stack, tmp_path):
    spec = find_model("sax", "t1")
    assert spec.sequence == "t1", f"models/manifest.json has no sax t1 model (would fall back to {spec.name})"
    out, report_dir = tmp_path / "out.h5", tmp_path / "report"
    assert main_replay([str(t1_and_sd_map_file), "--out", str(out), "--report-dir", str(report_dir),
                        *MOLLI_CHAIN]) == 0

    # the chain's data_roles=T1: the SD maps come back unchanged and without annotated copies
    assert list_image_groups(out) == ["dataset/image_1", "dataset/image_101", f"dataset/image_{SD_MAP_SERIES}"]
    _, sent_maps_and_sd = read_ismrmrd_images(t1_and_sd_map_file)
    sent_sd = [image for image in sent_maps_and_sd if image.image_series_index == SD_MAP_SERIES]
    _, returned_sd = read_ismrmrd_images(out, f"dataset/image_{SD_MAP_SERIES}")
    assert all(np.array_equal(a.data, b.data) for a, b in zip(returned_sd, sent_sd, strict=True))
    assert len(returned_sd) == len(sent_sd) == len(stack)
    _, sent = read_ismrmrd_images(t1_map_file)
    _, annotated = read_ismrmrd_images(out, "dataset/image_101")
    assert len(annotated) == len(sent)
    assert any(not np.array_equal(a.data, s.data) for a, s in zip(annotated, sent, strict=True))  # crosses drawn

    report = json.loads((report_dir / "report.json").read_text())
    records = {r["slice"]: r for r in report["images"]}
    found_per_slice = []
    for index, source in enumerate(stack):
        record = records[index]
        assert record["status"] == "ok" and record["model"] == spec.name and record["view"] == "sax"
        found = {name: np.array(lm["pixel_rc"]) for name, lm in record["landmarks"].items() if lm is not None}
        assert "C-LV" in found, f"slice {index}: no LV centre"
        found_per_slice.append(len(found))
        for name, truth in zip(("A-RVI", "P-RVI", "C-LV"), source.landmarks_rc, strict=True):
            if name in found:
                distance_mm = np.linalg.norm((found[name] - truth) * np.asarray(source.pixel_spacing_mm))
                assert distance_mm < MAX_DISTANCE_MM, f"slice {index} {name}: {distance_mm:.1f} mm from the label"
        angle = record["measures"].get("RVInsertionAngle_deg")
        if {"A-RVI", "P-RVI"} <= found.keys():
            true_angle = rv_insertion_angle_deg(*source.landmarks_rc, source.pixel_spacing_mm)
            assert abs(angle - true_angle) < MAX_ANGLE_ERROR_DEG
        else:  # a measure only from points the model found
            assert angle is None, f"slice {index}: an angle without both RV insertion points"
        if "A-RVI" in found:
            true_direction = anterior_rvi_direction_deg(source.landmarks_rc[0], source.landmarks_rc[2],
                                                        source.pixel_spacing_mm)  # image up = anterior here
            found_direction = record["measures"]["AnteriorRVIDirection_deg"]
            assert angle_between_deg(found_direction, true_direction) < MAX_ANGLE_ERROR_DEG
    # The T1 model finds about nine in ten landmarks on synthetic maps (its card), so one of the nine may fall below
    # the chain's threshold: the middle slice's P-RVI is borderline for every release so far (probability 0.59 with
    # the 2026-12-03 file, 0.39 with the 2026-12-06 one, and 0.0 / 0.24-0.54 on post-contrast draws of the slice).
    assert sum(found_per_slice) >= 8, f"landmarks found per slice: {found_per_slice}"
