"""The shipped sax_cine model through the passive gadget on a real ACDC short-axis slice."""

from __future__ import annotations

import socket
import threading

import nibabel
import numpy as np
import pytest
from mrd_stream_helpers import CONFIG, HEADER, exchange, header_xml, image_message, sax_plane_image, text_message
from scipy import ndimage

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.gadget import LandmarkServer
from cmr_landmark.model_store import ModelError, find_model


def test_real_sax_cine_model_finds_the_lv_centre(shared_data, monkeypatch):
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    try:
        find_model("sax", "cine")
    except ModelError as error:
        pytest.skip(f"no trained sax cine model in models/ yet: {error}")
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
