"""Single-phase slices that arrive together run through the model in one call, with the same results."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from cmr_landmark.config import REPO_ROOT
from cmr_landmark.gadget import arrived_together, detect_slice, detect_stack, landmark_outputs
from cmr_landmark.gadget_parameters import GadgetParameters
from cmr_landmark.model_store import find_model
from cmr_landmark.mrd_connection import ReceivedImage, data_waiting
from cmr_landmark.series import SliceBatch

SAMPLE = REPO_ROOT / "samples" / "mnms2_001_sax.h5"


def _batch(slice_index: int, phases: int = 1) -> SliceBatch:
    return SliceBatch(series_index=1, slice=slice_index, phases=list(range(phases)), items=[object()] * phases)


def test_only_slices_already_arrived_are_grouped():
    waiting = iter([True, True, False, True, False])  # more data after slices 0, 1 and 4; none after 2 and 5
    batches = [_batch(0), _batch(1), _batch(2), _batch(3, phases=3), _batch(4), _batch(5)]
    groups = list(arrived_together(iter(batches), lambda: next(waiting)))
    assert [[b.slice for b in group] for group in groups] == [[0, 1, 2], [3], [4, 5]]


def test_a_long_run_of_arrived_slices_is_cut_into_bounded_model_calls():
    from cmr_landmark.gadget import MAX_SLICES_PER_CALL

    batches = [_batch(i) for i in range(2 * MAX_SLICES_PER_CALL + 3)]
    groups = list(arrived_together(iter(batches), lambda: True))  # everything already waiting, as in a replay
    assert [len(group) for group in groups] == [MAX_SLICES_PER_CALL, MAX_SLICES_PER_CALL, 3]
    assert [b.slice for group in groups for b in group] == list(range(len(batches)))


def test_only_an_image_on_its_way_counts_as_waiting():
    import socket
    from types import SimpleNamespace

    from gadgetron.external.constants import (
        GADGET_MESSAGE_CLOSE,
        GADGET_MESSAGE_ISMRMRD_IMAGE,
        GADGET_MESSAGE_ISMRMRD_WAVEFORM,
        GadgetMessageIdentifier,
    )

    def waiting_after(sent: bytes, close: bool = False) -> bool:
        gadget_end, client_end = socket.socketpair()
        with gadget_end, client_end:
            client_end.sendall(sent)
            if close:
                client_end.shutdown(socket.SHUT_WR)
            connection = SimpleNamespace(socket=SimpleNamespace(socket=gadget_end))
            waiting = data_waiting(connection)
            assert gadget_end.recv(64, socket.MSG_DONTWAIT) == sent  # peeked, not consumed
            return waiting

    assert waiting_after(GadgetMessageIdentifier.pack(GADGET_MESSAGE_ISMRMRD_IMAGE) + b"part of a header")
    assert waiting_after(GadgetMessageIdentifier.pack(GADGET_MESSAGE_ISMRMRD_IMAGE)[:1])  # half an identifier
    assert not waiting_after(GadgetMessageIdentifier.pack(GADGET_MESSAGE_ISMRMRD_WAVEFORM) + b"a waveform")
    assert not waiting_after(GadgetMessageIdentifier.pack(GADGET_MESSAGE_CLOSE))
    assert not waiting_after(b"", close=True)


@pytest.fixture
def shipped_sax_cine(monkeypatch) -> None:
    """The shipped models folder (committed: a manifest without its sax cine model fails the test, not skips it)."""
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    find_model("sax", "cine")


def _sample_stack(n_slices: int) -> tuple[ismrmrd.xsd.ismrmrdHeader, list[SliceBatch]]:
    dataset = ismrmrd.Dataset(str(SAMPLE), "dataset", False)
    try:
        header = ismrmrd.xsd.CreateFromDocument(dataset.read_xml_header())
        images = [dataset.read_image("image_1", i) for i in range(dataset.number_of_images("image_1"))]
    finally:
        dataset.close()
    end_diastole = [image for image in images if image.phase == 0][:n_slices]
    batches = [SliceBatch(series_index=image.image_series_index, slice=image.slice, phases=[0],
                          items=[ReceivedImage(raw=b"", image=image)]) for image in end_diastole]
    return header, batches


def test_stack_in_one_call_matches_slice_by_slice(shipped_sax_cine):
    header, batches = _sample_stack(6)
    parameters = GadgetParameters.from_strings({"view": "sax", "sequence": "cine", "probability_threshold": "0.0"})
    stacked = detect_stack(batches, parameters, header)
    for batch, together in zip(batches, stacked, strict=True):
        alone = detect_slice(batch, parameters, header)
        for name, landmark in alone.landmarks[0].items():
            other = together.landmarks[0][name]
            # bf16 kernels may differ with the batch size: well under a pixel.
            assert np.hypot(landmark.row - other.row, landmark.col - other.col) < 0.5, name
        assert alone.measures[0].keys() == together.measures[0].keys()


def test_a_bad_slice_in_a_stack_is_tagged_alone(shipped_sax_cine):
    header, batches = _sample_stack(3)
    batches[1].items[0].image.data[:] = 0  # no signal: this slice cannot be processed, the others can
    parameters = GadgetParameters.from_strings({"view": "sax", "sequence": "cine"})
    copies = list(landmark_outputs(iter([batches]), parameters, header))
    assert [copy.meta["CMRLandmark_Status"] for copy in copies] == ["ok", "error", "ok"]
    assert "no signal" in copies[1].meta["CMRLandmark_Error"]
