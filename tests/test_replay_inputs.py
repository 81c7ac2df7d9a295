"""Inputs and output paths a developer replaying data runs into: damaged, empty or malformed ISMRMRD files, output
paths that cannot be written, a gadget that fails, an interrupt. Each ends in one line and exit status 2 (130 for an
interrupt) before the gadget starts where it can, never in a traceback or in results lost after the gadget ran."""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
from ismrmrd.serialization import ProtocolDeserializer, ProtocolSerializer
from mrd_stream_helpers import header, sax_plane_image
from xsdata.exceptions import XmlContextError

from cmr_landmark import replay_cli
from cmr_landmark.config import REPO_ROOT
from cmr_landmark.convert_cli import main_convert
from cmr_landmark.io import ImageReadError, list_image_groups, read_ismrmrd_images, write_ismrmrd_images
from cmr_landmark.replay import replay_passive, write_results
from cmr_landmark.replay_cli import main_replay

SAMPLE = REPO_ROOT / "samples" / "mnms2_001_sax.h5"
NOBODY = ["--gadgetron", "127.0.0.1:9"]  # nothing listens there: a replay that got that far would say "cannot connect"


def _refused(argv: list[str], capsys) -> str:
    """The one line a replay that is refused before any connection prints (exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        main_replay(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error and "cannot connect" not in error, error
    return error


def _refused_convert(argv: list[str], capsys) -> str:
    """The one line a refused ``convert`` prints (exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        main_convert(argv)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error

def damaged_sample(path: Path) -> Path:
    """The short-axis sample with 20 kB of one gzip-compressed image chunk overwritten."""
    data = bytearray(SAMPLE.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 20000] = b"Z" * 20000
    path.write_bytes(bytes(data))
    return path


def sample_with_meta(path: Path, index: int, attribute_text: str) -> Path:
    """The sample with image ``index``'s meta attribute string replaced (its header's length with it)."""
    shutil.copyfile(SAMPLE, path)
    with h5py.File(path, "r+") as file:
        group = file["dataset/image_1"]
        group["attributes"][index] = attribute_text
        head = group["header"][index]
        head["attribute_string_len"] = len(attribute_text)
        group["header"][index] = head
    return path


def test_report_dir_that_is_or_lies_under_the_output_file_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out, report_dir in (("out/sax", "out/sax/report"), ("x.h5", "x.h5")):  # once an IsADirectoryError, late
        error = _refused([str(SAMPLE), "--out", out, "--report-dir", report_dir, *NOBODY], capsys)
        assert f"--report-dir {report_dir} is --out {out} or lies under it" in error
    error = _refused([str(SAMPLE), "--out", "rep/report.json", "--report-dir", "rep", *NOBODY], capsys)
    assert "--out rep/report.json has the name of one of the report's files" in error
    assert list(tmp_path.iterdir()) == []  # no folder made


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no one can create files")
def test_output_paths_where_nothing_can_be_written_are_refused_before_the_input_is_read(tmp_path, capsys):
    error = _refused([str(SAMPLE), "--out", "/proc/cmr-landmark/out.h5", *NOBODY], capsys)
    assert "--out /proc/cmr-landmark/out.h5: cannot create files in /proc" in error
    error = _refused([str(SAMPLE), "--out", str(tmp_path / "out.h5"), "--report-dir", "/proc", *NOBODY], capsys)
    assert "--report-dir /proc: cannot create files in /proc" in error
    # a device is no file: written beside and renamed over, it would be replaced (as root)
    error = _refused([str(SAMPLE), "--out", "/dev/null", *NOBODY], capsys)
    assert "--out /dev/null is not a regular file" in error
    error = _refused_convert([str(SAMPLE), "--out", "/dev/null", "--view", "sax"], capsys)
    assert "--out /dev/null is not a regular file" in error
    assert Path("/dev/null").is_char_device()
    assert list(tmp_path.iterdir()) == []


def test_a_chain_that_cannot_be_used_is_refused_before_the_gadget_starts(tmp_path, capsys):
    out = tmp_path / "out.h5"
    error = _refused([str(SAMPLE), "--out", str(out), "--config", str(tmp_path / "none.xml"), *NOBODY], capsys)
    assert f"--config {tmp_path / 'none.xml'}: " in error and "No such file" in error
    not_xml = tmp_path / "chain.xml"
    not_xml.write_text("<configuration><stream>")
    error = _refused([str(SAMPLE), "--out", str(out), "--config", str(not_xml), *NOBODY], capsys)
    assert f"--config {not_xml}: no element found" in error
    other_chain = tmp_path / "other.xml"
    other_chain.write_text("<configuration><stream><external><execute name='gadgets.other' target='x' type='python'/>"
                           "</external></stream></configuration>")
    error = _refused([str(SAMPLE), "--out", str(out), "--config", str(other_chain), *NOBODY], capsys)
    assert "the chain has no <external> block that executes gadgets.cmr_landmark_gadget" in error
    bad_value = tmp_path / "bad.xml"
    bad_value.write_text("<configuration><property name='view' value='axial'/></configuration>")
    error = _refused([str(SAMPLE), "--out", str(out), "--config", str(bad_value), *NOBODY], capsys)
    assert f"the parameters of --config {bad_value} and --set: view must be one of" in error and "axial" in error
    # --set overrides the chain's value one by one: the bad view is replaced, so the replay gets as far as connecting
    with pytest.raises(SystemExit) as stop:
        main_replay([str(SAMPLE), "--out", str(out), "--config", str(bad_value), "--set", "view=sax", *NOBODY])
    assert stop.value.code == 2 and "cannot connect" in capsys.readouterr().err
    assert not out.exists()


def test_a_damaged_chunk_is_a_read_error_naming_the_image_not_an_hdf5_traceback(tmp_path, capsys):
    damaged = damaged_sample(tmp_path / "damaged.h5")
    with pytest.raises(ImageReadError, match=r"dataset/image_1 image \d+ cannot be read, the file is damaged \(.*"
                                             r"filter returned failure during read"):
        read_ismrmrd_images(damaged)
    out, report_dir = tmp_path / "new" / "out.h5", tmp_path / "report"
    error = _refused([str(damaged), "--out", str(out), "--report-dir", str(report_dir), *NOBODY], capsys)
    assert "the file is damaged" in error
    assert not out.parent.exists() and not report_dir.exists()  # folders are made once the input has been read
    error = _refused_convert([str(damaged), "--out", str(tmp_path / "converted.h5"), "--view", "sax"], capsys)
    assert "the file is damaged" in error and "cannot write" not in error  # the input's fault, not the output's


def test_meta_that_is_not_xml_is_refused_naming_the_image(tmp_path, capsys):
    source = sample_with_meta(tmp_path / "bad_meta.h5", 1, "<ismrmrdMeta><meta>")
    error = _refused([str(source), "--out", str(tmp_path / "out.h5"), *NOBODY], capsys)
    assert "dataset/image_1 image 1: its meta attributes are not valid ISMRMRD meta XML" in error


def test_an_image_group_without_images_is_refused_before_the_gadget_starts(tmp_path, capsys):
    source = tmp_path / "empty_group.h5"
    shutil.copyfile(SAMPLE, source)
    with h5py.File(source, "r+") as file:
        for name in ("data", "header", "attributes"):
            file["dataset/image_1"][name].resize(0, axis=0)
    out = tmp_path / "out.h5"
    error = _refused([str(source), "--out", str(out), *NOBODY], capsys)
    assert error == f"cmr-landmark replay: {source}: dataset/image_1 holds no images\n"
    assert not out.exists()


@pytest.mark.parametrize("content, reason", [
    (b"", "file signature not found"),
    (b"not an HDF5 file", "file signature not found"),
    (SAMPLE.read_bytes()[:700_000], "truncated file: eof = 700000"),
])
def test_a_file_that_does_not_open_says_hdf5s_reason(tmp_path, capsys, content, reason):
    source = tmp_path / "in.h5"
    source.write_bytes(content)
    error = _refused([str(source), "--out", str(tmp_path / "out.h5"), *NOBODY], capsys)
    assert "not a readable ISMRMRD/HDF5 file" in error and reason in error  # was "unable to open file" for all


def test_a_series_that_mixes_data_types_is_written_byte_for_byte(tmp_path):
    whole = sax_plane_image(np.full((16, 16), 3, np.int16), image_index=1)
    fraction = sax_plane_image(np.full((16, 16), 2.5, np.float32), image_index=2)
    out = tmp_path / "out.h5"
    write_results(out, header(), [whole, fraction])  # image_1 once held both, the 2.5 stored as 2
    assert list_image_groups(out) == ["dataset/image_1", "dataset/image_1_float32_1x1x16x16"]
    _, (first,) = read_ismrmrd_images(out, "dataset/image_1")
    _, (second,) = read_ismrmrd_images(out, "dataset/image_1_float32_1x1x16x16")
    assert first.data.dtype == np.int16 and np.all(first.data == 3)
    assert second.data.dtype == np.float32 and np.all(second.data == 2.5)
    with pytest.raises(ValueError, match="image group image_1 mixes data types or shapes"):
        write_ismrmrd_images(out, header(), {"image_1": [whole, fraction]})


def test_a_write_that_fails_leaves_the_earlier_output_as_it_was(tmp_path):
    out = tmp_path / "out.h5"
    image = sax_plane_image(np.ones((16, 16), np.float32))
    write_ismrmrd_images(out, header(), {"image_1": [image]})
    before = out.read_bytes()
    with pytest.raises(XmlContextError):  # fails half way: the file already made, the header not written into it
        write_ismrmrd_images(out, "not an ISMRMRD header", {"image_1": [image, image]})
    assert out.read_bytes() == before
    assert [path.name for path in tmp_path.iterdir()] == ["out.h5"]  # no partial file left


def test_the_timeout_is_for_silence_not_for_the_whole_stream(tmp_path):
    """A gadget that answers every 0.4 s for 2 s is not cut off by a 1 s timeout (it once was, its results lost)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def slow_echo() -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as incoming, connection.makefile("wb") as outgoing:
            answer = ProtocolSerializer(outgoing)
            for item in ProtocolDeserializer(incoming).deserialize():
                if isinstance(item, ismrmrd.Image):
                    threading.Event().wait(0.4)
                    answer.serialize(item)
                    outgoing.flush()
            answer.close()

    threading.Thread(target=slow_echo, daemon=True).start()
    images = [sax_plane_image(np.full((16, 16), p, np.float32), phase=p) for p in range(5)]
    try:
        result = replay_passive(listener.getsockname()[:2], header(), images, timeout_s=1.0)
    finally:
        listener.close()
    assert len(result.images) == 5  # all of a 2 s stream, under a whole-stream deadline of 1 s a ReplayError


def test_a_failing_gadget_is_said_in_one_line_its_log_kept(tmp_path, capsys, monkeypatch):
    # the gadget Gadgetron's way starts as ``python -m gadgetron PORT gadgets.cmr_landmark_gadget ...``, found
    # from the working folder first: here one that logs an error and fails
    gadgets = tmp_path / "gadgets"
    gadgets.mkdir()
    (gadgets / "__init__.py").write_text("")
    (gadgets / "cmr_landmark_gadget.py").write_text(
        "import logging\n\n\ndef landmark_detection(connection):\n"
        "    logging.getLogger('fake').error('the model file is damaged')\n"
        "    raise RuntimeError('the fake gadget failed')\n")
    monkeypatch.chdir(tmp_path)
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "report.json").write_text("{}")  # an earlier run's report, which this failure must not sit beside
    error = _refused([str(SAMPLE), "--out", "out.h5", "--report-dir", str(report_dir)], capsys)
    # what the replay saw first depends on when the gadget's end reached it (the stream broken, or its exit status)
    assert error.startswith("cmr-landmark replay: the ")
    assert error.endswith(f"; the gadget's last error: the fake gadget failed (the gadget's whole log: "
                          f"{report_dir / 'gadget.log'})\n")
    log = (report_dir / "gadget.log").read_text()
    assert "the model file is damaged" in log and "Traceback" in log
    assert not Path("out.h5").exists() and sorted(p.name for p in report_dir.iterdir()) == ["gadget.log"]


def test_an_interrupt_ends_in_one_line_and_status_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # as Ctrl-C while the input is read

    monkeypatch.setattr(replay_cli, "read_ismrmrd_images", interrupted)
    with pytest.raises(SystemExit) as stop:
        main_replay([str(SAMPLE), "--out", str(tmp_path / "out.h5"), *NOBODY])
    assert stop.value.code == 130 and capsys.readouterr().err == "cmr-landmark replay: interrupted\n"
