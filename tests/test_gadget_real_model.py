"""The shipped sax_cine model through the passive gadget on real short-axis slices (ACDC; the M&Ms-2 sample stored
in every orientation)."""

from __future__ import annotations

import socket
import threading

import ismrmrd
import nibabel
import numpy as np
import pytest
from mrd_stream_helpers import CONFIG, HEADER, exchange, header_xml, image_message, sax_plane_image, text_message
from scipy import ndimage

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.geometry import ORIENTATIONS, orient_image, points_to_original
from cmr_landmark.model_store import find_model
from cmr_landmark.server import LandmarkServer


def test_real_sax_cine_model_finds_the_lv_centre(shared_data, monkeypatch):
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    find_model("sax", "cine")
    volume = nibabel.load(shared_data / "acdc" / "patient001" / "patient001_frame01.nii.gz")
    labels = np.asarray(nibabel.load(shared_data / "acdc" / "patient001" / "patient001_frame01_gt.nii.gz").dataobj)
    z = volume.shape[2] // 2
    # NIfTI (i, j) -> image (rows, cols) = transpose; the spacing follows.
    pixels = np.asarray(volume.dataobj[:, :, z], dtype=np.float32).T
    blood_pool = labels[:, :, z].T == 3
    col_mm, row_mm = (float(v) for v in volume.header.get_zooms()[:2])
    field_of_view = (pixels.shape[1] * col_mm, pixels.shape[0] * row_mm)

    server = LandmarkServer(0, max_connections=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    image = sax_plane_image(pixels, field_of_view_mm=field_of_view)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        replies = exchange(sock, [text_message(CONFIG, "<configuration/>"),
                                  text_message(HEADER, header_xml(phases=1, matrix_xy=pixels.shape[::-1],
                                                                  field_of_view_mm=field_of_view)),
                                  image_message(image)])
    thread.join(60)
    copy = next(item for _, item in replies if item.image_series_index == 101)
    assert copy.meta["CMRLandmark_Status"] == "ok", copy.meta.get("CMRLandmark_Error")
    assert copy.meta["CMRLandmark_C-LV_found"] == "1"
    found = np.array([float(v) for v in copy.meta["CMRLandmark_C-LV_pixel"]])
    truth = np.array(ndimage.center_of_mass(blood_pool))
    assert np.linalg.norm((found - truth) * (row_mm, col_mm)) < 10.0


def _sample_sax_slice() -> ismrmrd.Image:
    dataset = ismrmrd.Dataset(str(REPO_ROOT / "samples" / "mnms2_001_sax.h5"), "dataset", create_if_needed=False)
    try:
        return dataset.read_image("image_1", 10)  # slice 5, end-diastole: the RV and both insertion points
    finally:
        dataset.close()


def _stored_turned(sample: ismrmrd.Image, turns: int, mirror: bool) -> ismrmrd.Image:
    """The sample's slice as a scanner that writes its matrix turned/mirrored would send it: the pixels through
    ``orient_image`` and read_dir/phase_dir (and the field of view) describing the same plane."""
    head = sample.getHead()
    pixels = orient_image(sample.data[0, 0], turns, mirror)
    origin, next_col, next_row = points_to_original(np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]),
                                                    sample.data.shape[-2:], turns, mirror)
    axes = np.stack([np.asarray(head.phase_dir), np.asarray(head.read_dir)])  # (d_row, d_col) -> patient LPS
    image = ismrmrd.Image.from_array(pixels[np.newaxis, np.newaxis])
    turned = image.getHead()
    for field in ("position", "slice_dir", "image_series_index", "image_index", "slice", "phase", "image_type"):
        setattr(turned, field, getattr(head, field))
    turned.read_dir = tuple((next_col - origin) @ axes)
    turned.phase_dir = tuple((next_row - origin) @ axes)
    fov = tuple(head.field_of_view)
    turned.field_of_view = (fov[1], fov[0], fov[2]) if turns % 2 else fov
    image.setHead(turned)
    return image


def _sample_spacing_mm(sample: ismrmrd.Image) -> tuple[float, float]:
    """(row, column) spacing of the sample slice from its own header: field of view over matrix."""
    fov, matrix = sample.getHead().field_of_view, sample.data.shape[-2:]
    return float(fov[1]) / matrix[0], float(fov[0]) / matrix[1]


# (0, False) is the reference every other storage is compared with: comparing it with itself could not fail
@pytest.mark.parametrize(("turns", "mirror"), [o for o in ORIENTATIONS if o != (0, False)])
def test_a_short_axis_slice_stored_in_any_orientation_gives_the_same_landmarks(turns, mirror, monkeypatch):
    # Scanners write the pixel matrix in their acquisition orientation; the short-axis models know one display.
    # The gadget turns each slice into it from read_dir/phase_dir, so the points (mapped back) and their names
    # must not depend on how the matrix was stored (docs/gadget.md, "Orientation").
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    find_model("sax", "cine")
    sample = _sample_sax_slice()
    results = {}
    for orientation in ((0, False), (turns, mirror)):
        image = _stored_turned(sample, *orientation)
        server = LandmarkServer(0, max_connections=1)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        matrix = image.data.shape[-1], image.data.shape[-2]
        fov = tuple(image.getHead().field_of_view)[:2]
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            header = header_xml(phases=1, matrix_xy=matrix, field_of_view_mm=fov)
            replies = exchange(sock, [text_message(CONFIG, "<configuration/>"), text_message(HEADER, header),
                                      image_message(image)])
        thread.join(60)
        copy = next(item for _, item in replies if item.image_series_index == 101)
        assert copy.meta["CMRLandmark_Status"] == "ok", copy.meta.get("CMRLandmark_Error")
        points = {}
        for name in ("A-RVI", "P-RVI", "C-LV"):
            assert copy.meta[f"CMRLandmark_{name}_found"] == "1", (orientation, name)
            found = np.array([[float(v) for v in copy.meta[f"CMRLandmark_{name}_pixel"]]])
            points[name] = points_to_original(found, sample.data.shape[-2:], *orientation)[0]
        results[orientation] = points
    spacing_mm = np.array(_sample_spacing_mm(sample))
    for name, reference in results[(0, False)].items():
        distance_mm = np.linalg.norm((results[(turns, mirror)][name] - reference) * spacing_mm)
        assert distance_mm < 1.5, f"{name} moved {distance_mm:.1f} mm when the matrix was stored turned/mirrored"


def test_sax_lge_sees_the_standard_display_turned_toward_its_training_direction(monkeypatch):
    # sax_lge was trained with the RV a quarter turn from where the standard display puts it (manifest
    # display_rv_direction_deg 194.4 against config.HEADER_DISPLAY_RV_DIRECTION_DEG 120; docs/orientation.md), so
    # the gadget shows it the header's standard display turned once more (np.rot90). Its points through the wire
    # are those of the detector on that display, not on the standard one.
    from cmr_landmark.detector import Detector, detect_in_orientation

    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    spec = find_model("sax", "lge", name="sax_lge")
    sample = _sample_sax_slice()  # its header puts it in the standard display
    server = LandmarkServer(0, max_connections=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    matrix = sample.data.shape[-1], sample.data.shape[-2]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        header = header_xml(phases=1, matrix_xy=matrix, field_of_view_mm=tuple(sample.getHead().field_of_view)[:2])
        config = '<configuration><property name="model" value="sax_lge"/></configuration>'
        replies = exchange(sock, [text_message(CONFIG, config), text_message(HEADER, header), image_message(sample)])
    thread.join(60)
    copy = next(item for _, item in replies if item.image_series_index == 101)
    assert copy.meta["CMRLandmark_Status"] == "ok", copy.meta.get("CMRLandmark_Error")
    detector = Detector(spec)
    pixels, spacing = np.abs(sample.data[0, 0]).astype(np.float32)[np.newaxis], _sample_spacing_mm(sample)
    turned = detect_in_orientation(detector, pixels, spacing, 1, False)[0]
    standard = detect_in_orientation(detector, pixels, spacing, 0, False)[0]
    compared = 0
    for name in ("A-RVI", "P-RVI", "C-LV"):
        found = np.array([float(v) for v in copy.meta[f"CMRLandmark_{name}_pixel"]])
        on_turned = np.array([turned[name].row, turned[name].col])
        on_standard = np.array([standard[name].row, standard[name].col])
        assert np.linalg.norm(found - on_turned) < 0.5, name
        compared += np.linalg.norm(found - on_standard) > 1.0
    assert compared, "the two displays gave the same points: the test would not tell them apart"
