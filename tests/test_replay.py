"""Replay over the real wire protocol: the gadget started as Gadgetron starts it, or listening (passive), fed
images or raw k-space; the report read back from the returned attributes; the shipped sample."""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
from mrd_stream_helpers import patient_mm_by_hand
from test_convert import heart_like
from test_io import oblique_affine, write_nifti

from cmr_landmark.config import REPO_ROOT, SAX_LANDMARKS
from cmr_landmark.convert_cli import main_convert
from cmr_landmark.geometry import anterior_direction_in_image
from cmr_landmark.io import list_image_groups, read_ismrmrd_images, read_series, write_ismrmrd_images
from cmr_landmark.model_store import find_model
from cmr_landmark.replay import ReplayError, gadget_warnings, replay_active, replay_passive
from cmr_landmark.replay_cli import main_replay
from cmr_landmark.server import LandmarkServer

SAMPLES = REPO_ROOT / "samples"
# A short-axis line of the console summary: series, slice, phase, landmarks found, and the angle or "no angle".
SAX_LINE = re.compile(r"^series (\d+) slice +(\d+) \(sax\) phase (\d+): (\d)/3 landmarks[^\n]*?; "
                      r"(?:RV insertion angle (\d+) deg|no angle)", re.MULTILINE)


def assert_sax_lines_match_images(stdout: str, out: Path) -> None:
    """One printed line per annotated short-axis image in ``out``, whose count and angle are the ones that image
    carries in its attributes: no figure on the console that no image has."""
    _, images = read_ismrmrd_images(out, "dataset/image_101")
    metas = {(int(im.image_series_index), int(im.slice), int(im.phase)): im.meta for im in images}
    printed = [((int(m[1]), int(m[2]), int(m[3])), int(m[4]), m[5]) for m in SAX_LINE.finditer(stdout)]
    assert sorted(key for key, _, _ in printed) == sorted(metas), stdout
    for key, found, angle in printed:
        meta = metas[key]
        assert found == sum(meta[f"CMRLandmark_{name}_found"] == "1" for name in SAX_LANDMARKS), key
        expected = meta.get("CMRLandmark_RVInsertionAngle_deg")
        assert angle == (None if expected is None else f"{float(expected):.0f}"), key



@pytest.fixture
def lax_cine_nifti(tmp_path):
    return write_nifti(tmp_path / "lax.nii.gz", heart_like(48, 56, phases=3, slices=1), oblique_affine())


def test_active_replay_round_trip_with_report(lax_cine_nifti, tmp_path, throwaway_model_folder, monkeypatch, capsys):
    source = tmp_path / "lax.h5"
    main_convert([str(lax_cine_nifti), "--out", str(source), "--view", "lax"])
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))  # inherited by the gadget process
    out, report_dir = tmp_path / "out" / "lax_out.h5", tmp_path / "report"
    assert main_replay([str(source), "--out", str(out), "--report-dir", str(report_dir)]) == 0

    assert list_image_groups(out) == ["dataset/image_1", "dataset/image_101"]
    _, sent = read_ismrmrd_images(source)
    _, originals_back = read_ismrmrd_images(out, "dataset/image_1")
    for before, after in zip(sent, originals_back, strict=True):
        np.testing.assert_array_equal(after.data, before.data)

    report = json.loads((report_dir / "report.json").read_text())
    assert [(r["slice"], r["phase"], r["series"]) for r in report["images"]] == [(0, t, 101) for t in range(3)]
    original = sent[0]
    for record in report["images"]:
        assert record["status"] == "ok" and record["model"] == "throwaway_lax_cine"
        for landmark in record["landmarks"].values():
            expected = patient_mm_by_hand(original.position, original.read_dir, original.phase_dir,
                                          original.field_of_view, original.matrix_size, *landmark["pixel_rc"])
            np.testing.assert_allclose(landmark["patient_mm"], expected, atol=0.01)
    (summary,) = report["summary"]
    lengths = [r["measures"]["LVLength_mm"] for r in report["images"]]
    assert summary["lv_length_mm"] == lengths
    assert summary["longitudinal_shortening"] == pytest.approx((max(lengths) - min(lengths)) / max(lengths), abs=1e-3)
    assert report["timings_s"]["images_sent"] == 3
    assert (report_dir / "slice00.png").stat().st_size > 0
    assert (report_dir / "lv_length_slice00.png").stat().st_size > 0
    captured = capsys.readouterr()
    assert "slice  0 (lax, 3 phase(s)): 9/9 landmarks" in captured.out
    assert "the gadget warned" not in captured.err  # a clean run says nothing more


def test_what_the_gadget_warned_is_shown_by_the_replay(lax_cine_nifti, tmp_path, throwaway_model_folder, monkeypatch,
                                                      capsys):
    # a view set against the protocol's runs the other view's model on every slice: the gadget's log says so, and
    # a developer replaying reads the console, not that log
    source = tmp_path / "lax.h5"
    main_convert([str(lax_cine_nifti), "--out", str(source), "--view", "lax"])
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))
    capsys.readouterr()
    main_replay([str(source), "--out", str(tmp_path / "out.h5"), "--set", "view=sax"])
    warned = [line for line in capsys.readouterr().err.splitlines() if "the gadget warned" in line]
    assert len(warned) == 1 and "view=sax is set, but the protocol texts (header, image comments) say lax" in warned[0]


def test_gadget_warnings_are_its_distinct_warning_lines_in_order():
    log = ("12-07 07:54:04.502 WARNING [ext. 16176 gadgets.x] view=lax is set\n"
           "12-07 07:54:04.600 INFO [ext. 16176 gadgets.x] loading model\n"
           "12-07 07:54:04.700 ERROR [ext. 16176 gadgets.x] a failure\n"
           "12-07 07:54:04.800 WARNING [ext. 16176 gadgets.x] no sequence\n"
           "12-07 07:54:04.900 WARNING [ext. 16176 gadgets.x] view=lax is set\n")
    assert gadget_warnings(log) == ["view=lax is set", "no sequence"]
    assert gadget_warnings("") == []


def test_raw_kspace_replayed_to_a_listening_gadget(lax_cine_nifti, tmp_path, throwaway_model_folder, monkeypatch,
                                                   capsys):
    raw = tmp_path / "raw.h5"
    main_convert([str(lax_cine_nifti), "--out", str(raw), "--view", "lax", "--kspace"])
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(throwaway_model_folder))  # the gadget runs in this process here
    server = LandmarkServer(0, max_connections=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out = tmp_path / "raw_out.h5"
    assert main_replay([str(raw), "--out", str(out), "--gadgetron", f"127.0.0.1:{server.port}"]) == 0
    thread.join(30)
    expected = read_series(lax_cine_nifti).images
    images = expected.shape[0] * expected.shape[1]
    assert f"{images} images read and reconstructed from the raw data in " in capsys.readouterr().out
    reconstructed = read_series(out, "dataset/image_1").images
    np.testing.assert_allclose(reconstructed, expected, atol=1e-3 * expected.max())
    _, annotated = read_ismrmrd_images(out, "dataset/image_101")
    assert [image.meta["CMRLandmark_Status"] for image in annotated] == ["ok"] * 3


def test_a_gadget_that_cannot_start_is_reported(lax_cine_nifti, tmp_path):
    source = tmp_path / "lax.h5"
    main_convert([str(lax_cine_nifti), "--out", str(source), "--view", "lax"])
    header, images = read_ismrmrd_images(source)
    with pytest.raises(ReplayError, match="No module named 'no_such_gadget_module'"):
        replay_active(header, images, module="no_such_gadget_module")


def test_an_output_that_cannot_be_written_is_refused_before_the_gadget_runs(lax_cine_nifti, tmp_path, capsys):
    source = tmp_path / "lax.h5"
    main_convert([str(lax_cine_nifti), "--out", str(source), "--view", "lax"])
    for extra in (["--out", str(tmp_path)], ["--out", str(source / "out.h5")],  # a folder; under a file
                  ["--out", str(tmp_path / "out.h5"), "--report-dir", str(source)]):
        with pytest.raises(SystemExit) as stop:
            main_replay([str(source), "--gadgetron", "127.0.0.1:9", *extra])  # nothing listens on port 9
        assert stop.value.code == 2
        assert "cannot connect" not in capsys.readouterr().err  # stopped before any connection was tried


@pytest.mark.parametrize("arguments, message", [
    (["--set", "view=foo"], "--set: view must be one of"),
    (["--set", "veiw=sax"], "--set: unknown gadget parameter(s) ['veiw']"),
    (["--set", "probability_threshold=abc"], "--set: gadget parameter probability_threshold='abc'"),
])
def test_a_parameter_the_gadget_would_refuse_is_refused_before_anything_is_sent(tmp_path, capsys, arguments, message):
    source = tmp_path / "in.h5"
    source.write_bytes(b"")  # never read: the parameters are checked first
    with pytest.raises(SystemExit) as stop:
        main_replay([str(source), "--out", str(tmp_path / "out.h5"), "--gadgetron", "127.0.0.1:9", *arguments])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_a_model_this_machines_manifest_lacks_is_refused_where_the_gadget_would_run_here(tmp_path, capsys):
    source = tmp_path / "in.h5"
    source.write_bytes(b"")
    with pytest.raises(SystemExit) as stop:  # active mode: the gadget started here reads this manifest
        main_replay([str(source), "--out", str(tmp_path / "out.h5"), "--set", "model=sax_cinee"])
    assert stop.value.code == 2 and "--set: gadget parameter model='sax_cinee'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a running gadget elsewhere has its own models: not judged here
        main_replay([str(source), "--out", str(tmp_path / "out.h5"), "--set", "model=sax_cinee",
                     "--gadgetron", "127.0.0.1:9"])
    assert "sax_cinee" not in capsys.readouterr().err


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused(tmp_path, capsys, timeout):
    source = tmp_path / "in.h5"
    source.write_bytes(b"")  # never read: the options are checked first
    with pytest.raises(SystemExit) as stop:  # 0, -1 and nan ended every replay at once, inf in an OverflowError
        main_replay([str(source), "--out", str(tmp_path / "out.h5"), "--gadgetron", "127.0.0.1:9",
                     "--timeout", timeout])
    assert stop.value.code == 2
    assert f"--timeout must be a positive number of seconds, got {float(timeout):g}" in capsys.readouterr().err


def test_a_file_with_several_image_groups_names_the_option_that_picks_one(tmp_path, capsys):
    from mrd_stream_helpers import header, sax_plane_image

    source = tmp_path / "replayed.h5"  # as a replay's own output: originals and annotated copies
    image = sax_plane_image(np.ones((16, 16), np.float32))
    write_ismrmrd_images(source, header(), {"image_1": [image], "image_101": [image]})
    with pytest.raises(SystemExit) as stop:
        main_replay([str(source), "--out", str(tmp_path / "out.h5"), "--gadgetron", "127.0.0.1:9"])
    assert stop.value.code == 2
    assert ("holds several image groups ['dataset/image_1', 'dataset/image_101']; pick one with --image-group"
            in capsys.readouterr().err)


def test_a_missing_input_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main_replay([str(tmp_path / "missing.h5"), "--out", str(tmp_path / "out.h5")])
    assert stop.value.code == 2 and "missing.h5 is not a file" in capsys.readouterr().err


def test_nobody_listening_is_reported(lax_cine_nifti, tmp_path):
    source = tmp_path / "lax.h5"
    main_convert([str(lax_cine_nifti), "--out", str(source), "--view", "lax"])
    header, images = read_ismrmrd_images(source)
    with socket.create_server(("127.0.0.1", 0)) as probe:  # a free port, closed again before the replay
        port = probe.getsockname()[1]
    with pytest.raises(ReplayError, match="cannot connect"):
        replay_passive(("127.0.0.1", port), header, images)


def _large_images(count: int = 24) -> tuple[ismrmrd.xsd.ismrmrdHeader, list[ismrmrd.Image]]:
    """One header and ``count`` 512 x 512 float images (1 MiB each: more than any socket buffer holds)."""
    from mrd_stream_helpers import header, sax_plane_image

    pixels = np.ones((512, 512), np.float32)
    return header(), [sax_plane_image(pixels, phase=p, image_index=p + 1) for p in range(count)]


def _peer(behaviour) -> tuple[socket.socket, threading.Thread]:
    """A listening socket whose one connection is handled by ``behaviour(connection)`` in a thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        with connection:
            behaviour(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize("timeout_s, said", [(2.0, "2 s"), (0.5, "0.5 s")])  # 0.5 was once said as "0 s"
def test_a_peer_that_never_reads_ends_the_replay_at_its_timeout(timeout_s, said):
    stop = threading.Event()
    listener, _ = _peer(lambda connection: stop.wait(30))  # accepts, then neither reads nor answers
    header, images = _large_images()
    try:
        with pytest.raises(ReplayError, match=f"nothing went to or came back from the gadget for {re.escape(said)} "):
            replay_passive(listener.getsockname()[:2], header, images, timeout_s=timeout_s)
    finally:
        stop.set()
        listener.close()


def test_a_reply_that_cannot_be_decoded_is_a_failure_not_an_empty_success():
    def garbage(connection):
        connection.sendall((1022).to_bytes(2, "little") + bytes(range(256)) * 2)  # an IMAGE of nonsense
        connection.settimeout(30)
        while connection.recv(1 << 16):  # then take the whole stream, until the replay hangs up
            pass

    listener, thread = _peer(garbage)
    header, images = _large_images(count=2)
    try:
        with pytest.raises(ReplayError, match="broke off: (?!EOFError)"):
            replay_passive(listener.getsockname()[:2], header, images, timeout_s=20.0)
    finally:
        listener.close()


def test_short_axis_summary_prints_each_phase_as_its_image_carries_it(tmp_path, passive_server, capsys):
    source = tmp_path / "sax.h5"
    nifti = write_nifti(tmp_path / "sax.nii.gz", heart_like(48, 56, phases=2, slices=2), oblique_affine())
    main_convert([str(nifti), "--out", str(source), "--view", "sax"])
    capsys.readouterr()
    out = tmp_path / "sax_out.h5"
    assert main_replay([str(source), "--out", str(out), "--gadgetron", f"127.0.0.1:{passive_server.port}"]) == 0
    stdout = capsys.readouterr().out
    assert_sax_lines_match_images(stdout, out)
    assert len(SAX_LINE.findall(stdout)) == 4  # 2 slices x 2 phases


def test_a_replay_in_which_every_copy_failed_writes_everything_and_exits_1(tmp_path, passive_server, capsys):
    source = tmp_path / "sax.h5"
    nifti = write_nifti(tmp_path / "sax.nii.gz", heart_like(48, 56, phases=2, slices=2), oblique_affine())
    main_convert([str(nifti), "--out", str(source), "--view", "sax"])
    capsys.readouterr()
    out, report_dir = tmp_path / "sax_out.h5", tmp_path / "report"
    # a long-axis model for a short-axis series: the gadget passes every image through with an error copy
    assert main_replay([str(source), "--out", str(out), "--report-dir", str(report_dir), "--gadgetron",
                        f"127.0.0.1:{passive_server.port}", "--set", "model=throwaway_lax_cine"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == ("cmr-landmark replay: nothing detected: all 4 annotated copies carry "
                                             "CMRLandmark_Status=error (the errors are listed above)")
    assert "ERRORS: " in captured.out and "wrote" in captured.out  # the summary and the output, as ever
    assert list_image_groups(out) == ["dataset/image_1", "dataset/image_101"]
    report = json.loads((report_dir / "report.json").read_text())
    assert len(report["images"]) == 4 and {r["status"] for r in report["images"]} == {"error"}


def test_a_replayed_output_is_judged_by_this_passs_copies_not_its_tagged_originals(tmp_path, passive_server,
                                                                                   capsys):
    source = tmp_path / "sax.h5"
    nifti = write_nifti(tmp_path / "sax.nii.gz", heart_like(48, 56, phases=2, slices=2), oblique_affine())
    main_convert([str(nifti), "--out", str(source), "--view", "sax"])
    first = tmp_path / "first.h5"
    gadget = ["--gadgetron", f"127.0.0.1:{passive_server.port}"]
    assert main_replay([str(source), "--out", str(first), *gadget, "--set", "model=throwaway_sax_cine"]) == 0
    capsys.readouterr()
    # the first pass's copies (tagged ok) sent again, through a model that fails on every one of them
    assert main_replay([str(first), "--image-group", "dataset/image_101", "--out", str(tmp_path / "second.h5"),
                        *gadget, "--set", "model=throwaway_lax_cine", "--set", "series_index_offset=1000"]) == 1
    captured = capsys.readouterr()
    assert "all 4 annotated copies carry CMRLandmark_Status=error" in captured.err
    assert "series 1101" in captured.out and "series 101 " not in captured.out


def test_shipped_sample_is_small_and_has_plausible_geometry():
    sax, lax = SAMPLES / "mnms2_001_sax.h5", SAMPLES / "mnms2_001_lax_4ch_cine.h5"
    assert sax.stat().st_size + lax.stat().st_size < 5_000_000
    header, images = read_ismrmrd_images(sax)
    assert header.measurementInformation.protocolName == "CMR_LANDMARK_SAX_CINE"
    assert len({im.slice for im in images}) == 12 and len({im.phase for im in images}) == 2
    for image in images:
        anterior = anterior_direction_in_image(image.read_dir, image.phase_dir)
        assert anterior[0] < -0.8  # anterior is up in the short-axis display
    positions = np.array([im.position for im in images if im.phase == 0])
    steps = np.diff(positions, axis=0)
    np.testing.assert_allclose(np.linalg.norm(steps, axis=1), 10.0, atol=0.1)
    header, images = read_ismrmrd_images(lax)
    assert header.measurementInformation.protocolName == "CMR_LANDMARK_LAX_CINE"
    assert sorted(im.phase for im in images) == list(range(25))


def test_shipped_t1_map_sample_through_the_molli_chain(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    sample = SAMPLES / "mnms2_001_sax_t1map_synthetic.h5"
    assert sample.stat().st_size < 1_500_000
    header, images = read_ismrmrd_images(sample)
    assert header.measurementInformation.protocolName == "SAX_MOLLI_T1MAP"
    assert len(images) == 12 and {im.phase for im in images} == {0}
    assert all(im.data.dtype == np.uint16 and im.meta["GADGETRON_DataRole"] == "T1" for im in images)
    assert find_model("sax", "t1", folder=REPO_ROOT / "models").sequence == "t1"
    report_dir = tmp_path / "t1_report"
    assert main_replay([str(sample), "--out", str(tmp_path / "t1.h5"), "--report-dir", str(report_dir), "--config",
                        str(REPO_ROOT / "xml_configs" / "cmr_landmark_molli_t1.xml")]) == 0
    out = capsys.readouterr().out
    assert "series 101: model sax_t1" in out  # the console names the model the chain chose
    assert_sax_lines_match_images(out, tmp_path / "t1.h5")
    report = json.loads((report_dir / "report.json").read_text())
    assert {r["model"] for r in report["images"]} == {"sax_t1"}
    mid_ventricular = [r for r in report["images"] if 3 <= r["slice"] <= 8]
    assert all(lm is not None for r in mid_ventricular for lm in r["landmarks"].values())
    for record in mid_ventricular:  # the angle and the AHA orientation, printed on the slice's line
        angle, direction = (record["measures"][key] for key in ("RVInsertionAngle_deg", "AnteriorRVIDirection_deg"))
        assert 30.0 < angle < 180.0
        assert (f"RV insertion angle {angle:.0f} deg; AHA orientation {direction:.0f} deg" in out)


def shipped_models_listed() -> None:
    for view in ("sax", "lax"):
        find_model(view, "cine", folder=REPO_ROOT / "models")


def test_shipped_sample_with_shipped_models(tmp_path, monkeypatch, capsys):
    shipped_models_listed()
    monkeypatch.setenv("CMR_LANDMARK_MODELS", str(REPO_ROOT / "models"))
    report_dir = tmp_path / "lax_report"
    assert main_replay([str(SAMPLES / "mnms2_001_lax_4ch_cine.h5"), "--out", str(tmp_path / "lax.h5"),
                        "--report-dir", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert len(report["images"]) == 25
    assert all(lm is not None for r in report["images"] for lm in r["landmarks"].values())
    (summary,) = report["summary"]
    assert all(60.0 < length < 130.0 for length in summary["lv_length_mm"])
    assert 0.05 < summary["longitudinal_shortening"] < 0.35
    annotated = ismrmrd.Dataset(str(tmp_path / "lax.h5"), "dataset", False)
    try:  # every phase says, per landmark, whether it was seen or filled in from the neighbouring phases
        metas = [annotated.read_image("image_101", i).meta for i in range(25)]
    finally:
        annotated.close()
    assert all(meta[f"CMRLandmark_{name}_filled"] in ("0", "1") for meta in metas for name in ("MV-1", "MV-2", "APEX"))
    # the console shows the cine's shortening beside each phase's LV length
    shortening_pct = f"LS {100 * summary['longitudinal_shortening']:.0f} %"
    assert all(list(np.atleast_1d(meta["GADGETRON_ImageComment"]))[-1] == shortening_pct for meta in metas)
    # a point filled in from the neighbouring phases carries _found=1 too: the comment and the console count the
    # phase's own points and the filled ones apart (they said "3/3" and "75/75" for a cine with 5 filled points)
    filled = [sum(meta[f"CMRLandmark_{name}_filled"] == "1" for name in ("MV-1", "MV-2", "APEX")) for meta in metas]
    assert sum(filled) > 0
    assert [list(np.atleast_1d(meta["GADGETRON_ImageComment"]))[0] for meta in metas] == [
        f"LAX landmarks {3 - count}/3" + (f" + {count} filled" if count else "") for count in filled]
    assert (f"{75 - sum(filled)}/75 landmarks + {sum(filled)} filled in from neighbouring phases"
            in capsys.readouterr().out)
    # the report reads the flags back, and draws every phase and the curve
    assert [r["filled"] for r in sorted(report["images"], key=lambda r: r["phase"])] == [
        {name: meta[f"CMRLandmark_{name}_filled"] == "1" for name in ("MV-1", "MV-2", "APEX")} for meta in metas]
    for picture in ("slice00.png", "phases_slice00.png", "lv_length_slice00.png"):
        assert (report_dir / picture).stat().st_size > 10_000, picture
    report_dir = tmp_path / "sax_report"
    assert main_replay([str(SAMPLES / "mnms2_001_sax.h5"), "--out", str(tmp_path / "sax.h5"),
                        "--report-dir", str(report_dir)]) == 0
    # phases with one angle each, one with none (slice 10: A-RVI found in neither): each printed as its image has it
    assert_sax_lines_match_images(capsys.readouterr().out, tmp_path / "sax.h5")
    report = json.loads((report_dir / "report.json").read_text())
    mid_ventricular = [r for r in report["images"] if 4 <= r["slice"] <= 7]
    assert all(lm is not None for r in mid_ventricular for lm in r["landmarks"].values())
    assert all(30.0 < r["measures"]["RVInsertionAngle_deg"] < 180.0 for r in mid_ventricular)


def test_a_failed_replay_still_shows_what_the_gadget_warned(tmp_path, monkeypatch, capsys):
    # a warning may be why it failed (a view set against the protocol's): it must not be lost with the exit
    from cmr_landmark import replay_cli

    log = "12-07 08:40:00.000 WARNING [ext. 1 gadgets.x] view=sax is set, but the protocol texts say lax\n"

    def failing(*args, **kwargs):
        raise ReplayError("the gadget process exited with status 1", gadget_log=log)

    monkeypatch.setattr(replay_cli, "replay_active", failing)
    with pytest.raises(SystemExit) as stop:
        main_replay([str(SAMPLES / "mnms2_001_sax.h5"), "--out", str(tmp_path / "out.h5")])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert "the gadget warned: view=sax is set, but the protocol texts say lax" in err
    assert "exited with status 1" in err
