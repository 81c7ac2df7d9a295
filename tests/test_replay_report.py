"""The replay's console summary and report pictures, from annotated images built here (no gadget, no model)."""

from __future__ import annotations

import ismrmrd
import matplotlib.image
import numpy as np
import pytest
from mrd_stream_helpers import sax_plane_image

from cmr_landmark.config import LANDMARKS_BY_VIEW
from cmr_landmark.output_images import OWN_COMMENT
from cmr_landmark.overlay import label_offset_points
from cmr_landmark.replay_report import landmark_records, slice_summaries, summary_text, write_report

Point = tuple[float, float] | None


def annotated(view: str, slice_index: int, phase: int, points: dict[str, Point], filled: tuple[str, ...] = (),
              **measures: float) -> ismrmrd.Image:
    """A returned image carrying the CMRLandmark_* attributes the gadget writes (docs/gadget.md); the landmarks
    named in ``filled`` were filled in from the neighbouring phases (found=1, filled=1, probability 0)."""
    meta = {"CMRLandmark_Status": "ok", "CMRLandmark_View": view, "CMRLandmark_OriginalSeriesIndex": "1",
            "CMRLandmark_Model": f"{view}_cine"}
    for name in LANDMARKS_BY_VIEW[view]:
        point = points.get(name)
        meta[f"CMRLandmark_{name}_found"] = "0" if point is None else "1"
        if filled:
            meta[f"CMRLandmark_{name}_filled"] = "1" if name in filled else "0"
        if point is not None:
            meta[f"CMRLandmark_{name}_pixel"] = [f"{v}" for v in point]
            meta[f"CMRLandmark_{name}_patient_mm"] = ["0.0", "0.0", "0.0"]
            meta[f"CMRLandmark_{name}_probability"] = "0.9"
    meta.update({f"CMRLandmark_{name}": f"{value}" for name, value in measures.items()})
    return sax_plane_image(np.zeros((32, 32), np.float32), series_index=101, slice_index=slice_index, phase=phase,
                           meta=meta)


ALL_SAX = {"A-RVI": (10.0, 20.0), "P-RVI": (20.0, 8.0), "C-LV": (18.0, 16.0)}


def test_each_short_axis_phase_gets_its_own_count_points_and_angle():
    images = [  # two angles, and an angle in phase 1 only (the shipped sample's slices 4 and 9 with earlier models)
        annotated("sax", 4, 0, ALL_SAX, RVInsertionAngle_deg=138.0651),
        annotated("sax", 4, 1, ALL_SAX, RVInsertionAngle_deg=148.6782),
        annotated("sax", 9, 0, {"P-RVI": (20.0, 8.0), "C-LV": (18.0, 16.0)}),
        annotated("sax", 9, 1, ALL_SAX, RVInsertionAngle_deg=84.0179, AnteriorRVIDirection_deg=301.6),
        annotated("sax", 10, 0, {"A-RVI": (10.0, 20.0), "C-LV": (18.0, 16.0)}, AnteriorRVIDirection_deg=330.4),
        annotated("sax", 11, 0, {}),
    ]
    lines = summary_text(landmark_records(images)).splitlines()
    points = "A-RVI (10.0, 20.0) p=0.90, P-RVI (20.0, 8.0) p=0.90, C-LV (18.0, 16.0) p=0.90"
    assert lines == [
        "landmarks as (row, column) pixels of the image, p = peak probability",
        "series 101: model sax_cine",
        f"series 101 slice  4 (sax) phase 0: 3/3 landmarks; {points}; RV insertion angle 138 deg",
        f"series 101 slice  4 (sax) phase 1: 3/3 landmarks; {points}; RV insertion angle 149 deg",
        "series 101 slice  9 (sax) phase 0: 2/3 landmarks; P-RVI (20.0, 8.0) p=0.90, C-LV (18.0, 16.0) p=0.90; "
        "no angle (A-RVI not found)",
        f"series 101 slice  9 (sax) phase 1: 3/3 landmarks; {points}; RV insertion angle 84 deg; "
        "AHA orientation 302 deg",
        # the AHA orientation needs the anterior insertion and the LV centre, not the posterior insertion
        "series 101 slice 10 (sax) phase 0: 2/3 landmarks; A-RVI (10.0, 20.0) p=0.90, C-LV (18.0, 16.0) p=0.90; "
        "no angle (P-RVI not found); AHA orientation 330 deg",
        "series 101 slice 11 (sax) phase 0: 0/3 landmarks; no angle (A-RVI, P-RVI, C-LV not found)",
    ]


def test_a_short_axis_slice_summary_carries_both_angles_per_phase():
    images = [annotated("sax", 2, 0, ALL_SAX, RVInsertionAngle_deg=120.0, AnteriorRVIDirection_deg=355.5),
              annotated("sax", 2, 1, {"P-RVI": (20.0, 8.0), "C-LV": (18.0, 16.0)})]
    (summary,) = slice_summaries(landmark_records(images))
    assert summary["rv_insertion_angle_deg"] == [120.0, None]
    assert summary["anterior_rvi_direction_deg"] == [355.5, None]
    assert "lv_length_mm" not in summary


def test_a_failed_short_axis_image_says_so_on_its_line():
    image = annotated("sax", 0, 0, {})
    image.meta["CMRLandmark_Status"] = "error"
    image.meta["CMRLandmark_Error"] = "no model for sax/lge"
    del image.meta["CMRLandmark_Model"]  # no model was found to run
    text = summary_text(landmark_records([image]))
    assert text.endswith("; no angle (A-RVI, P-RVI, C-LV not found); ERROR: no model for sax/lge")
    assert "series 101: model none (no model ran)" in text


def test_a_long_axis_slice_keeps_one_line_with_its_per_slice_measures():
    lax = {"MV-1": (10.0, 10.0), "MV-2": (10.0, 30.0), "APEX": (60.0, 20.0)}
    images = [annotated("lax", 0, t, lax if t else {**lax, "APEX": None}, LVLength_mm=length,
                        LongitudinalShortening=0.2)
              for t, length in enumerate((90.0, 72.0))]
    assert summary_text(landmark_records(images)).splitlines()[1:3] == ["series 101: model lax_cine", (
        "series 101 slice  0 (lax, 2 phase(s)): 5/6 landmarks; phase 0: MV-1 (10.0, 10.0) p=0.90, "
        "MV-2 (10.0, 30.0) p=0.90; LV length 72.0-90.0 mm, longitudinal shortening 20.0%")]


def test_the_phase_grid_has_one_column_per_phase_up_to_five(tmp_path):
    phases = {0: 2, 1: 7}  # slice: phases
    originals = [sax_plane_image(np.random.default_rng(t).random((32, 32), np.float32), slice_index=k, phase=t)
                 for k, count in phases.items() for t in range(count)]
    images = [annotated("sax", k, t, ALL_SAX) for k, count in phases.items() for t in range(count)]
    write_report(tmp_path, landmark_records(images), originals, {})
    widths = [matplotlib.image.imread(tmp_path / f"phases_slice{k:02d}.png").shape[1] for k in phases]
    assert widths[0] / widths[1] == pytest.approx(2 / 5)  # 2 panels wide, not 2 panels and 3 blank ones


def test_two_series_with_the_same_slice_numbers_keep_their_own_pictures(tmp_path):
    originals, images = [], []
    for series in (1, 2):
        for t in range(2):
            originals.append(sax_plane_image(np.random.default_rng(t).random((32, 32), np.float32), series_index=series,
                                             slice_index=0, phase=t))
            image = annotated("sax", 0, t, ALL_SAX)
            image.meta["CMRLandmark_OriginalSeriesIndex"] = str(series)
            image.image_series_index = 100 + series
            images.append(image)
    write_report(tmp_path, landmark_records(images), originals, {})
    pictures = sorted(path.name for path in tmp_path.glob("*.png"))
    assert pictures == ["phases_series101_slice00.png", "phases_series102_slice00.png",
                        "series101_slice00.png", "series102_slice00.png"]


def test_a_cine_slice_measured_in_parts_reports_the_shortening_of_all_its_phases():
    # a recon that sent more phases than the header said: the gadget measured phases 0-1 and 2-3 apart
    lax = {"MV-1": (10.0, 10.0), "MV-2": (10.0, 30.0), "APEX": (60.0, 20.0)}
    lengths, parts = (90.0, 80.0, 72.0, 85.0), (0.1111, 0.1111, 0.1529, 0.1529)
    images = [annotated("lax", 0, t, lax, LVLength_mm=length, LongitudinalShortening=part)
              for t, (length, part) in enumerate(zip(lengths, parts, strict=True))]
    (summary,) = slice_summaries(landmark_records(images))
    assert summary["longitudinal_shortening"] == pytest.approx((90.0 - 72.0) / 90.0)
    assert summary["longitudinal_shortening_of_parts"] == [0.1111, 0.1529]
    # the console says so too: it once gave the whole's 20.0% alone, as if the gadget had measured it
    assert summary_text(landmark_records(images)).endswith(
        "LV length 72.0-90.0 mm, longitudinal shortening 20.0% over all phases; the gadget measured the beat in "
        "parts: 11.1%, 15.3%")


def test_points_filled_in_from_neighbouring_phases_are_counted_apart_from_those_found():
    lax = {"MV-1": (10.0, 10.0), "MV-2": (10.0, 30.0), "APEX": (60.0, 20.0)}
    images = [annotated("lax", 0, 0, lax, filled=("APEX", "MV-2")), annotated("lax", 0, 1, lax, filled=("MV-1",)),
              annotated("lax", 0, 2, {**lax, "APEX": None}, filled=("APEX",))]  # APEX of phase 2: found nowhere
    text = summary_text(landmark_records(images))
    assert "slice  0 (lax, 3 phase(s)): 5/9 landmarks + 3 filled in from neighbouring phases;" in text
    # phase 0's own points with their probability, its filled ones marked as such (they were 'p=0.00')
    assert text.endswith("phase 0: MV-1 (10.0, 10.0) p=0.90, MV-2 (10.0, 30.0) filled, APEX (60.0, 20.0) filled")
    assert OWN_COMMENT.fullmatch("LAX landmarks 2/3 + 1 filled")  # the image comment, dropped on a second pass


def test_a_new_report_removes_the_earlier_reports_files_and_only_those(tmp_path):
    originals = [sax_plane_image(np.random.default_rng(t).random((32, 32), np.float32), phase=t) for t in range(2)]
    earlier = ["slice07.png", "phases_slice07.png", "lv_length_series3_slice01.png", "gadget.log", "report.json"]
    others = ["notes.txt", "slice07.jpg", "my_slice07.png"]
    for name in earlier + others:
        (tmp_path / name).write_text("earlier")
    write_report(tmp_path, landmark_records([annotated("sax", 0, t, ALL_SAX) for t in range(2)]), originals, {})
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [*others, "slice00.png", "phases_slice00.png", "report.json"])


def test_a_label_goes_where_it_hides_no_other_landmarks_cross():
    size = (30.0, 9.0)  # "P-RVI" at 9 points, in points
    assert label_offset_points((100.0, 100.0), [(200.0, 200.0)], size) == (6, 6)  # nothing near: upper right
    # C-LV's cross just to the upper right of P-RVI's, where its label went (the shipped sample's slice 3):
    # the first corner clear of it, lower right
    assert label_offset_points((100.0, 100.0), [(120.0, 110.0)], size) == (6, -15.0)
    # crosses all round: the corner farthest from them, here the lower left
    crowded = [(120.0, 110.0), (120.0, 85.0), (80.0, 110.0), (60.0, 80.0)]
    assert label_offset_points((100.0, 100.0), crowded, size) == (-36.0, -15.0)


def test_a_part_of_the_beat_without_a_shortening_still_reads_as_parts():
    # one part of the beat gave a shortening, the other none (its lengths on too few phases): the first part's
    # figure is not the slice's
    lax = {"MV-1": (10.0, 10.0), "MV-2": (10.0, 30.0), "APEX": (60.0, 20.0)}
    lengths, parts = (90.0, 80.0, 72.0, 85.0, 50.0, 60.0), (0.2, 0.2, 0.2, 0.2, None, None)
    images = [annotated("lax", 0, t, lax, LVLength_mm=length,
                        **({} if part is None else {"LongitudinalShortening": part}))
              for t, (length, part) in enumerate(zip(lengths, parts, strict=True))]
    (summary,) = slice_summaries(landmark_records(images))
    assert summary["longitudinal_shortening_of_parts"] == [0.2]
    assert "longitudinal_shortening" not in summary  # 50-90 mm over the whole beat: 44 %, no heart's


def test_a_cine_without_a_shortening_says_why():
    lax = {"MV-1": (10.0, 10.0), "MV-2": (10.0, 30.0), "APEX": (60.0, 20.0)}
    images = [annotated("lax", 0, t, lax if t < 2 else {}, **({"LVLength_mm": 90.0 - t} if t < 2 else {}))
              for t in range(5)]
    (summary,) = slice_summaries(landmark_records(images))
    assert summary["longitudinal_shortening_problem"].startswith("an LV length on only 2 of 5 phases")
    assert "no longitudinal shortening: an LV length on only 2 of 5 phases" in summary_text(landmark_records(images))
