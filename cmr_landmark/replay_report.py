"""What the gadget found, read back from the meta attributes of the images it returned (docs/gadget.md):
report.json, an overlay PNG per slice, every phase of each cine slice in one picture, the LV length curve of each
long-axis cine slice, and a text summary."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import ismrmrd

from .config import ATTRIBUTE_PREFIX, LANDMARKS_BY_VIEW
from .geometry import GeometryError, pixel_spacing_mm
from .measures import REPORTED_MEASURE_KEYS, longitudinal_shortening_or_none, shortening_problem
from .output_paths import written_beside
from .overlay import save_curve, save_landmark_overlay, save_phase_overlays

MEASURES = ("LVLength_mm", "LongitudinalShortening", "RVInsertionAngle_deg", "AnteriorRVIDirection_deg")
# The RV insertion angle is the angle at C-LV between A-RVI and P-RVI: without all three an image has none.
RVI_ANGLE_LANDMARKS = ("A-RVI", "P-RVI", "C-LV")
# Phases per row of phases_slice<k>.png; a slice with fewer phases gets one column per phase, not blank panels.
PHASE_COLUMNS = 5
REPORT_JSON_NAME = "report.json"
GADGET_LOG_NAME = "gadget.log"  # the gadget's log, which the replay writes beside the report (active mode)
# Every file of a report (write_report's and the gadget's log): what a new report removes of an earlier one in its
# folder, and nothing else there.
REPORT_FILE_NAME = re.compile(rf"{re.escape(REPORT_JSON_NAME)}|{re.escape(GADGET_LOG_NAME)}"
                              r"|(?:phases_|lv_length_)?(?:series\d+_)?slice\d+\.png")


def _floats(value) -> list[float]:
    values = value if isinstance(value, list) else [value]
    return [float(v) for v in values]


def landmark_record(image: ismrmrd.Image) -> dict | None:
    """The landmarks and measures one returned image carries, or None for an image the gadget did not tag."""
    meta = image.meta
    status = meta.get(f"{ATTRIBUTE_PREFIX}Status")
    if status is None:
        return None
    view = meta.get(f"{ATTRIBUTE_PREFIX}View")
    record = {
        "series": int(image.image_series_index),
        "original_series": int(meta.get(f"{ATTRIBUTE_PREFIX}OriginalSeriesIndex", image.image_series_index)),
        "slice": int(image.slice),
        "phase": int(image.phase),
        "status": status,
        "error": meta.get(f"{ATTRIBUTE_PREFIX}Error"),
        "model": meta.get(f"{ATTRIBUTE_PREFIX}Model"),
        "view": view,
        "landmarks": {},
        "measures": {name: float(meta[ATTRIBUTE_PREFIX + name]) for name in MEASURES
                     if ATTRIBUTE_PREFIX + name in meta},
    }
    # long-axis cine: which points were weak or missing in this phase and filled in from its neighbours
    filled = {name: meta[f"{ATTRIBUTE_PREFIX}{name}_filled"] == "1" for name in LANDMARKS_BY_VIEW.get(view, ())
              if f"{ATTRIBUTE_PREFIX}{name}_filled" in meta}
    if filled:
        record["filled"] = filled
    for name in LANDMARKS_BY_VIEW.get(view, ()):
        if meta.get(f"{ATTRIBUTE_PREFIX}{name}_found") != "1":
            record["landmarks"][name] = None
            continue
        record["landmarks"][name] = {
            "pixel_rc": _floats(meta[f"{ATTRIBUTE_PREFIX}{name}_pixel"]),
            "patient_mm": _floats(meta[f"{ATTRIBUTE_PREFIX}{name}_patient_mm"]),
            "probability": float(meta[f"{ATTRIBUTE_PREFIX}{name}_probability"]),
        }
    return record


def landmark_records(images: Sequence[ismrmrd.Image]) -> list[dict]:
    """Records of every tagged image, ordered by (series, slice, phase)."""
    records = [r for r in (landmark_record(image) for image in images) if r is not None]
    return sorted(records, key=lambda r: (r["series"], r["slice"], r["phase"]))


def slice_summaries(records: Sequence[dict]) -> list[dict]:
    """Per (series, slice): how many phases, LV length per phase and longitudinal shortening (long axis), RV
    insertion angle and anterior RV insertion direction per phase (short axis)."""
    slices: dict[tuple[int, int], list[dict]] = {}
    for record in records:
        slices.setdefault((record["series"], record["slice"]), []).append(record)
    summaries = []
    for (series, slice_index), members in sorted(slices.items()):
        members = sorted(members, key=lambda r: r["phase"])
        summary = {"series": series, "slice": slice_index, "view": members[0]["view"], "phases": len(members),
                   "errors": sorted({r["error"] for r in members if r["status"] != "ok"})}
        for measure, key in REPORTED_MEASURE_KEYS.items():
            values = [r["measures"].get(measure) for r in members]
            if any(v is not None for v in values):
                summary[key] = values
        shortening = sorted({r["measures"]["LongitudinalShortening"] for r in members
                             if "LongitudinalShortening" in r["measures"]})
        # every phase counts, those without a length as NaN: a shortening needs lengths on half of them
        lengths = [float("nan") if v is None else v for v in summary.get("lv_length_mm", [])]
        # a phase with a length but without the slice's shortening: the gadget measured the beat in parts (a recon
        # sending more phases than the header said; its log says so) and a part gave none
        some_without = any("LVLength_mm" in r["measures"] and "LongitudinalShortening" not in r["measures"]
                           for r in members)
        if len(shortening) == 1 and not some_without:
            summary["longitudinal_shortening"] = shortening[0]
        elif shortening:  # parts: the slice's shortening over all of its phases, the parts' values beside it
            whole = longitudinal_shortening_or_none(lengths)
            if whole is not None:
                summary["longitudinal_shortening"] = whole
            summary["longitudinal_shortening_of_parts"] = shortening
        elif len(members) > 1 and "lv_length_mm" in summary:  # a cine with lengths and no shortening: say why
            summary["longitudinal_shortening_problem"] = shortening_problem(lengths)
        summaries.append(summary)
    return summaries


def _points_text(record: dict) -> str:
    """The image's points as (row, col) pixels with their probability; a point filled in from the neighbouring
    phases says so instead."""
    filled = record.get("filled", {})
    return ", ".join(f"{name} ({lm['pixel_rc'][0]:.1f}, {lm['pixel_rc'][1]:.1f}) "
                     + ("filled" if filled.get(name) else f"p={lm['probability']:.2f}")
                     for name, lm in record["landmarks"].items() if lm is not None)


def _angle_text(record: dict) -> str:
    """The phase's own RV insertion angle, rounded as the image comment rounds it, or why it has none."""
    angle = record["measures"].get("RVInsertionAngle_deg")
    if angle is not None:
        return f"RV insertion angle {angle:.0f} deg"
    missing = [name for name in RVI_ANGLE_LANDMARKS if record["landmarks"].get(name) is None]
    return f"no angle ({', '.join(missing)} not found)" if missing else "no angle"


def _count_text(records: Sequence[dict]) -> str:
    """How many landmarks the images' own detections found, and how many more were filled in from neighbouring
    phases (a long-axis cine's weak or missing points, which carry _found=1 too): "70/75 landmarks + 5 filled in
    from neighbouring phases"."""
    total = sum(len(r["landmarks"]) for r in records)
    filled = sum(r.get("filled", {}).get(name, False) for r in records for name, lm in r["landmarks"].items()
                 if lm is not None)
    found = sum(lm is not None for r in records for lm in r["landmarks"].values()) - filled
    return f"{found}/{total} landmarks" + (f" + {filled} filled in from neighbouring phases" if filled else "")


def _phase_line(record: dict) -> str:
    """One short-axis image: its own count, points and angle, the figures its image comment carries."""
    line = (f"series {record['series']} slice {record['slice']:2d} ({record['view']}) phase {record['phase']}: "
            f"{_count_text([record])}")
    points = _points_text(record)
    line += (f"; {points}" if points else "") + f"; {_angle_text(record)}"
    direction = record["measures"].get("AnteriorRVIDirection_deg")  # A-RVI, C-LV and the scanner's geometry
    if direction is not None:
        line += f"; AHA orientation {direction:.0f} deg"
    if record["status"] != "ok":
        line += f"; ERROR: {record['error']}"
    return line


def _slice_line(summary: dict, members: Sequence[dict]) -> str:
    """One slice over all its phases: the first phase's points, then the per-slice measures (LV length range,
    longitudinal shortening), which hold for the slice rather than for one image."""
    line = (f"series {summary['series']} slice {summary['slice']:2d} ({summary['view'] or '?'}, "
            f"{summary['phases']} phase(s)): {_count_text(members)}")
    points = _points_text(members[0])
    if points:
        line += f"; phase {members[0]['phase']}: {points}"
    lengths = [v for v in summary.get("lv_length_mm", []) if v is not None]
    if lengths:
        span = f"{lengths[0]:.1f}" if len(lengths) == 1 else f"{min(lengths):.1f}-{max(lengths):.1f}"
        line += f"; LV length {span} mm"
    parts = summary.get("longitudinal_shortening_of_parts")  # the gadget measured the beat in parts: say so
    if "longitudinal_shortening" in summary:
        line += f", longitudinal shortening {100 * summary['longitudinal_shortening']:.1f}%" + (
            " over all phases" if parts else "")
    if parts:
        line += f"; the gadget measured the beat in parts: {', '.join(f'{100 * part:.1f}%' for part in parts)}"
    if problem := summary.get("longitudinal_shortening_problem"):
        line += f"; no longitudinal shortening: {problem}"
    if summary["errors"]:
        line += f"; ERRORS: {'; '.join(summary['errors'])}"
    return line


def slice_records(records: Sequence[dict], summary: dict) -> list[dict]:
    """The records of the slice a ``slice_summaries`` entry describes, in phase order."""
    return sorted((r for r in records if (r["series"], r["slice"]) == (summary["series"], summary["slice"])),
                  key=lambda r: r["phase"])


def summary_text(records: Sequence[dict]) -> str:
    """One line per long-axis slice; one line per short-axis image, because its points and RV insertion angle
    change from phase to phase and a per-slice figure (a median, another phase's angle) would match no image."""
    lines, series = [], None
    for summary in slice_summaries(records):
        members = slice_records(records, summary)
        if summary["series"] != series:  # which model answered: the automatic choice may not be the one expected
            series = summary["series"]
            models = sorted({r["model"] for r in records if r["series"] == series and r["model"] is not None})
            lines.append(f"series {series}: model {', '.join(models) or 'none (no model ran)'}")
        if summary["view"] == "sax":
            lines.extend(_phase_line(record) for record in members)
        else:
            lines.append(_slice_line(summary, members))
    if not lines:
        return "no landmark results came back"
    return "\n".join(["landmarks as (row, column) pixels of the image, p = peak probability", *lines])


def _points(record: dict) -> dict[str, tuple[float, float] | None]:
    return {name: None if lm is None else tuple(lm["pixel_rc"]) for name, lm in record["landmarks"].items()}


def _phase_title(record: dict) -> str:
    length = record["measures"].get("LVLength_mm")
    return f"phase {record['phase']}" + (f": {length:.0f} mm" if length is not None else "")


def _pixel_spacing_or_none(image: ismrmrd.Image) -> tuple[float, float] | None:
    """An original's (row, col) pixel spacing in mm; None where its header gives none (the gadget tagged it)."""
    try:
        return pixel_spacing_mm(tuple(image.field_of_view), tuple(image.matrix_size))
    except GeometryError:
        return None


def remove_earlier_report(report_dir: Path) -> None:
    """Make ``report_dir`` and remove the files an earlier report wrote there (:data:`REPORT_FILE_NAME`), so that
    none of them stays beside a new report or a failed run's gadget.log; any other file there stays."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for earlier in report_dir.iterdir():
        if REPORT_FILE_NAME.fullmatch(earlier.name) and earlier.is_file():
            earlier.unlink()


def write_report(
    report_dir: Path,
    records: Sequence[dict],
    originals: Sequence[ismrmrd.Image],
    timings: dict[str, float | None],
    extra: dict | None = None,
) -> Path:
    """report.json, slice<k>.png (first phase of each slice, landmarks drawn on the original image),
    phases_slice<k>.png (every phase of a slice with several, points filled in from neighbouring phases drawn
    open) and lv_length_slice<k>.png for long-axis slices with several phases (phases with a filled point
    marked). With more than one series, each name starts with series<s>_ (series<s>_slice<k>.png, ...), so that
    slices of two series never overwrite each other's pictures. The files of an earlier report in the folder
    (:data:`REPORT_FILE_NAME`) are removed first, so that none of its pictures stays beside the new report.json;
    any other file there stays. Returns the report.json path."""
    report_dir = Path(report_dir)
    remove_earlier_report(report_dir)
    summaries = slice_summaries(records)
    by_index = {(int(im.image_series_index), int(im.slice), int(im.phase)): im for im in originals}
    several_series = len({summary["series"] for summary in summaries}) > 1
    for summary in summaries:
        stem = (f"series{summary['series']}_" if several_series else "") + f"slice{summary['slice']:02d}"
        members = slice_records(records, summary)
        pairs = [(r, by_index.get((r["original_series"], r["slice"], r["phase"]))) for r in members]
        pairs = [(r, original) for r, original in pairs if original is not None]
        spacing = _pixel_spacing_or_none(pairs[0][1]) if pairs else None
        if spacing is None:
            pairs = []
        if pairs:
            first, original = pairs[0]
            save_landmark_overlay(original.data[0, 0], _points(first), report_dir / f"{stem}.png",
                                  title=f"slice {summary['slice']} phase {first['phase']}", pixel_spacing_mm=spacing)
        if len(pairs) > 1:
            save_phase_overlays(
                [original.data[0, 0] for _, original in pairs], [_points(r) for r, _ in pairs],
                [r.get("filled", {}) for r, _ in pairs], report_dir / f"phases_{stem}.png",
                titles=[_phase_title(r) for r, _ in pairs], pixel_spacing_mm=spacing,
                columns=min(len(pairs), PHASE_COLUMNS),
            )
        if summary["view"] == "lax" and summary["phases"] > 1 and "lv_length_mm" in summary:
            shortening = summary.get("longitudinal_shortening")
            title = f"slice {summary['slice']}" + (
                f": longitudinal shortening {100 * shortening:.1f}%" if shortening is not None else "")
            filled_phases = [any(r.get("filled", {}).values()) for r in members]
            save_curve(summary["lv_length_mm"], report_dir / f"lv_length_{stem}.png",
                       ylabel="LV length (mm)", title=title, marked=filled_phases,
                       marked_label="phase with a point filled in from its neighbours")
    report = {"images": list(records), "summary": summaries, "timings_s": timings, **(extra or {})}
    path = report_dir / REPORT_JSON_NAME
    with written_beside(path) as partial:
        partial.write_text(json.dumps(report, indent=1) + "\n")
    return path
