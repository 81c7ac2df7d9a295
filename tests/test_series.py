"""The series buffer releases each slice's phases together, whatever order and gaps they come with."""

from __future__ import annotations

from mrd_stream_helpers import header

from cmr_landmark.series import SeriesBuffer, phases_per_slice_from_header


def test_phases_per_slice_from_header():
    assert phases_per_slice_from_header(header(phases=25)) == 25
    assert phases_per_slice_from_header(header(phases=None)) is None
    assert phases_per_slice_from_header(None) is None


def test_known_phase_count_releases_complete_slices_sorted_even_when_interleaved():
    buffer = SeriesBuffer(phases_per_slice=3)
    arrivals = [(1, 0, 2), (1, 1, 0), (1, 0, 0), (1, 1, 2), (1, 0, 1), (1, 1, 1)]
    released = []
    for series, slice_index, phase in arrivals:
        released += [(b.slice, b.phases, b.items) for b in buffer.add(f"s{slice_index}p{phase}", series, slice_index,
                                                                      phase)]
    assert released == [(0, [0, 1, 2], ["s0p0", "s0p1", "s0p2"]), (1, [0, 1, 2], ["s1p0", "s1p1", "s1p2"])]
    assert buffer.flush() == []


def test_missing_phases_are_released_at_end_of_stream():
    buffer = SeriesBuffer(phases_per_slice=4)
    assert buffer.add("a", 1, 0, 3) == [] and buffer.add("b", 1, 0, 0) == [] and buffer.add("c", 2, 0, 0) == []
    batches = buffer.flush()
    assert [(b.series_index, b.slice, b.phases, b.items) for b in batches] == [(1, 0, [0, 3], ["b", "a"]),
                                                                               (2, 0, [0], ["c"])]
    assert buffer.flush() == []


def test_unknown_phase_count_releases_when_the_slice_changes():
    buffer = SeriesBuffer()
    assert buffer.add("p1", 1, 0, 1) == [] and buffer.add("p0", 1, 0, 0) == []
    batches = buffer.add("next", 1, 1, 0)
    assert [(b.slice, b.items) for b in batches] == [(0, ["p0", "p1"])]
    assert [(b.slice, b.items) for b in buffer.flush()] == [(1, ["next"])]


def test_a_repeated_phase_starts_a_new_batch_and_nothing_is_lost():
    buffer = SeriesBuffer(phases_per_slice=5)
    buffer.add("first", 1, 0, 0)
    buffer.add("second", 1, 0, 1)
    batches = buffer.add("repeat", 1, 0, 0)
    assert [b.items for b in batches] == [["first", "second"]]
    assert [b.items for b in buffer.flush()] == [["repeat"]]


def test_unknown_phase_count_keeps_each_series_cine_together_when_two_series_interleave():
    buffer = SeriesBuffer()
    released = []
    for phase in range(3):  # series 1 and 2, slice 0 each, their phases interleaved
        for series in (1, 2):
            released += buffer.add(f"s{series}p{phase}", series, 0, phase)
    released += buffer.add("s1 next slice", 1, 1, 0)  # series 1 moves on: its slice 0 is complete
    assert [(b.series_index, b.slice, b.phases) for b in released] == [(1, 0, [0, 1, 2])]
    assert [(b.series_index, b.slice, b.phases) for b in buffer.flush()] == [(2, 0, [0, 1, 2]), (1, 1, [0])]


def test_a_phase_beyond_the_known_count_is_warned_about_once(caplog):
    buffer = SeriesBuffer(phases_per_slice=2)  # the header says 2; the recon sends 3 per slice
    released = []
    with caplog.at_level("WARNING", logger="cmr_landmark.series"):
        for slice_index in range(2):
            for phase in range(3):
                released += buffer.add(f"s{slice_index}p{phase}", 1, slice_index, phase)
    released += buffer.flush()
    assert sorted(item for batch in released for item in batch.items) == sorted(
        f"s{s}p{p}" for s in range(2) for p in range(3))  # split, but nothing lost
    warnings = [r.getMessage() for r in caplog.records if "phases per slice were expected" in r.getMessage()]
    assert len(warnings) == 1 and "phase 2" in warnings[0] and "phases_per_slice" in warnings[0]
