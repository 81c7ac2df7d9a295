"""Raw files are written and read a block at a time, and reconstructed one slice at a time: a 32-coil cine is
gigabytes (benchmarks/raw_replay_memory.py measures the peak). Real ISMRMRD files, blocks made small so that a
small file has many."""

from __future__ import annotations

import gc
import weakref

import ismrmrd
import numpy as np
import pytest
from test_convert import heart_like
from test_io import oblique_affine, write_nifti

from cmr_landmark.convert import READOUT_OVERSAMPLING, build_header, series_to_acquisitions
from cmr_landmark.io import ImageReadError, ismrmrd_file, read_series
from cmr_landmark.io.ismrmrd_file import acquisitions_by_slice, read_ismrmrd_images, write_ismrmrd_acquisitions
from cmr_landmark.io.recon import reconstruct_cartesian

ROWS, COLS, COILS, SLICES, PHASES = 24, 32, 3, 3, 2


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(ismrmrd_file, "ACQUISITIONS_PER_BLOCK", 7)  # 144 acquisitions: 21 blocks, the last short


@pytest.fixture
def raw(tmp_path):
    series = read_series(write_nifti(tmp_path / "cine.nii.gz",
                                     heart_like(ROWS, COLS, phases=PHASES, slices=SLICES), oblique_affine()))
    header = build_header(series, "sax", "cine", coils=COILS, readout_oversampling=READOUT_OVERSAMPLING)
    return header, list(series_to_acquisitions(series, coils=COILS))


def interleaved(acquisitions: list[ismrmrd.Acquisition]) -> list[ismrmrd.Acquisition]:
    """The acquisitions reordered as an interleaved multi-slice scan plays them: each line of every slice in turn."""
    return sorted(acquisitions, key=lambda a: (a.idx.phase, a.idx.kspace_encode_step_1, a.idx.slice))


def read_back(path) -> list[tuple[int, list[ismrmrd.Acquisition]]]:
    with ismrmrd.File(str(path), "r") as file:
        return [(index, [(a.idx.phase, a.idx.kspace_encode_step_1, a.data.copy()) for a in group])
                for index, group in acquisitions_by_slice(file["dataset"])]


@pytest.mark.usefixtures("small_blocks")
def test_a_generator_written_in_blocks_reads_back_slice_by_slice_in_file_order(raw, tmp_path):
    header, acquisitions = raw
    order = interleaved(acquisitions)
    path = tmp_path / "raw.h5"
    write_ismrmrd_acquisitions(path, header, iter(order))  # taken as an iterator, not a list
    slices = read_back(path)
    assert [index for index, _ in slices] == list(range(SLICES))
    for index, group in slices:
        expected = [a for a in order if a.idx.slice == index]
        assert [(phase, line) for phase, line, _ in group] == [
            (a.idx.phase, a.idx.kspace_encode_step_1) for a in expected]
        for (_, _, data), acquisition in zip(group, expected, strict=True):
            np.testing.assert_array_equal(data, acquisition.data)


@pytest.mark.usefixtures("small_blocks")
def test_a_file_reconstructs_as_its_acquisitions_held_in_memory(raw, tmp_path):
    header, acquisitions = raw
    path = tmp_path / "raw.h5"
    write_ismrmrd_acquisitions(path, header, interleaved(acquisitions))
    _, from_file = read_ismrmrd_images(path)
    in_memory = reconstruct_cartesian(header, acquisitions)
    assert [(i.slice, i.phase, i.image_index) for i in from_file] == [
        (i.slice, i.phase, i.image_index) for i in in_memory] == [
        (s, p, 1 + PHASES * s + p) for s in range(SLICES) for p in range(PHASES)]
    for image, reference in zip(from_file, in_memory, strict=True):
        np.testing.assert_array_equal(image.data, reference.data)


@pytest.mark.usefixtures("small_blocks")
def test_a_slice_read_from_a_file_is_freed_before_the_next_is_read(raw, tmp_path, monkeypatch):
    header, acquisitions = raw
    path = tmp_path / "raw.h5"
    write_ismrmrd_acquisitions(path, header, interleaved(acquisitions))
    made: list[tuple[int, weakref.ref]] = []
    other_slices_alive: list[int] = []
    from_numpy = ismrmrd.file.Acquisitions.from_numpy

    def watched(row):  # every acquisition the reader makes, and how many of other slices still live then
        acquisition = from_numpy(row)
        gc.collect()
        other_slices_alive.append(sum(ref() is not None for index, ref in made if index != acquisition.idx.slice))
        made.append((acquisition.idx.slice, weakref.ref(acquisition)))
        return acquisition

    monkeypatch.setattr(ismrmrd.file.Acquisitions, "from_numpy", watched)
    _, images = read_ismrmrd_images(path)
    assert len(images) == SLICES * PHASES and len(made) == len(acquisitions)
    assert max(other_slices_alive) == 0


def test_a_file_of_noise_only_or_of_no_acquisitions_is_refused_in_one_line(raw, tmp_path):
    header, acquisitions = raw
    for acquisition in acquisitions[:5]:
        acquisition.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    for name, kept in (("noise.h5", acquisitions[:5]), ("empty.h5", [])):
        write_ismrmrd_acquisitions(tmp_path / name, header, kept)
        with pytest.raises(ImageReadError, match=f"{name}: raw data: no imaging acquisitions to reconstruct"):
            read_ismrmrd_images(tmp_path / name)


def test_slice_numbers_with_gaps_and_a_noise_only_slice_number(raw, tmp_path):
    # a noise scan numbered as a slice of its own, and imaging slices numbered 0, 2, 4: images come in slice order,
    # numbered without gaps, and the noise scan's slice number gives none
    header, acquisitions = raw
    for acquisition in acquisitions:
        acquisition.idx.slice = 2 * acquisition.idx.slice
    noise = ismrmrd.Acquisition.from_array(np.ones((COILS, 100), dtype=np.complex64))
    noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    noise.idx.slice = 7
    path = tmp_path / "gaps.h5"
    write_ismrmrd_acquisitions(path, header, [noise, *interleaved(acquisitions)])
    _, images = read_ismrmrd_images(path)
    assert [(i.slice, i.phase, i.image_index) for i in images] == [
        (2 * s, p, 1 + PHASES * s + p) for s in range(SLICES) for p in range(PHASES)]


def test_a_write_that_fails_midway_leaves_the_file_as_it_was(raw, tmp_path, small_blocks):
    header, acquisitions = raw
    path = tmp_path / "raw.h5"
    write_ismrmrd_acquisitions(path, header, acquisitions)
    before = path.read_bytes()

    def failing():
        yield from acquisitions[:20]  # more than one block is written before the failure
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_ismrmrd_acquisitions(path, header, failing())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".gz"] == ["raw.h5"]  # no partial file left
