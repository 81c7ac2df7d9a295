"""Active mode as Gadgetron runs it: the test listens, starts ``python -m gadgetron PORT
gadgets.cmr_landmark_gadget landmark_detection`` (which connects back), and plays Gadgetron's side of the wire."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import ismrmrd
from mrd_stream_helpers import (
    CONFIG,
    HEADER,
    exchange,
    export_throwaway_model,
    header_xml,
    image_message,
    phantom,
    sax_plane_image,
    text_message,
)

from cmr_landmark.config import REPO_ROOT

# The <configuration> of the <external> element, in Gadgetron's property syntax.
CONFIG_XML = ('<configuration><property name="view" value="auto"/><property name="series_index_offset" value="50"/>'
              '<property name="draw_landmarks" value="false"/></configuration>')


def test_gadgetron_started_gadget_round_trip(tmp_path):
    export_throwaway_model(tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(120)
    env = dict(os.environ, CMR_LANDMARK_MODELS=str(tmp_path), GADGETRON_EXTERNAL_LOG_LEVEL="INFO",
               OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "gadgetron", str(listener.getsockname()[1]), "gadgets.cmr_landmark_gadget",
               "landmark_detection"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        connection, _ = listener.accept()
        images = [sax_plane_image(phantom(p), series_index=3, phase=p, image_index=p + 1) for p in range(2)]
        sent = [image_message(image) for image in images]
        with connection:
            replies = exchange(connection, [text_message(CONFIG, CONFIG_XML),
                                            text_message(HEADER, header_xml(protocol_name="cine_sax", phases=2))]
                               + sent)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
        listener.close()
    assert process.returncode == 0, output.decode(errors="replace")
    assert [raw for raw, item in replies if item.image_series_index == 3] == sent
    copies = [item for _, item in replies if item.image_series_index == 53]
    assert [c.meta["CMRLandmark_Status"] for c in copies] == ["ok", "ok"], output.decode(errors="replace")
    # draw_landmarks=false: the copy's pixels are the original's.
    for copy, image in zip(copies, images, strict=True):
        assert (copy.data == image.data).all()
        assert isinstance(copy, ismrmrd.Image) and copy.meta["CMRLandmark_View"] == "sax"
