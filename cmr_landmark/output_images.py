"""The copies the gadget sends downstream after the originals: each original image with crosses at the landmarks
and the ``CMRLandmark_*`` attributes (points in pixels and patient mm, probabilities, measures), or tagged with
the error that stopped its slice; in their own series (the original's + ``series_index_offset``).
Attribute names and meanings: docs/gadget.md.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import ismrmrd
import numpy as np
from ismrmrd.meta import Meta

from .annotate import draw_crosses
from .config import ATTRIBUTE_PREFIX, DATA_ROLE_META, GADGET_LOGGER, LANDMARKS_BY_VIEW
from .gadget_parameters import GadgetParameters, ParameterError
from .geometry import pixel_to_patient_mm
from .measures import rounded_measure
from .mrd_connection import ReceivedImage

if TYPE_CHECKING:  # the type only: building copies needs no torch
    from .detector import ImageLandmarks

log = logging.getLogger(GADGET_LOGGER)

DATA_ROLE = "CMRLandmark"
SEQUENCE_DESCRIPTION_SUFFIX = "_LANDMARKS"
# The image comments annotated_image and error_image write. An image that comes through a second time (a replayed
# output, two landmark gadgets in one chain) loses them with its CMRLandmark_* attributes, so that its copy says
# only what this pass found.
OWN_COMMENT = re.compile(r"(SAX|LAX) landmarks \d+/\d+(?: \+ \d+ filled)?|LV length .* mm|RVI angle .* deg|LS .* %"
                         r"|landmark detection failed(?: \(.+\))?")


@dataclass
class SliceResult:
    """What detection found for one slice: the model, landmarks per phase and measures per phase, and why a phase
    left out (:class:`cmr_landmark.gadget.PreparedSlice`) could not be used."""

    model: str
    view: str
    sequence: str
    spacing_mm: tuple[float, float]
    landmarks: list[ImageLandmarks]
    measures: list[dict[str, float]]
    filled: list[dict[str, bool]] | None = None  # LAX cine: landmarks filled in from neighbouring phases
    unusable: dict[int, ValueError] = field(default_factory=dict)  # the slice's item index -> why it was left out


MAX_SERIES_INDEX = 65535  # image_series_index is a uint16


def output_series_index(original: int, parameters: GadgetParameters) -> int:
    """The copies' series index; raises ParameterError (a setting too large for this series, said in one line)
    where it would not fit the uint16 field (ctypes would wrap it silently onto another series)."""
    index = original + parameters.series_index_offset
    if index > MAX_SERIES_INDEX:
        raise ParameterError(f"series index {original} + series_index_offset {parameters.series_index_offset} = "
                             f"{index} exceeds {MAX_SERIES_INDEX}; the copies are put in series {MAX_SERIES_INDEX}")
    return index


def _copy_for_output(received: ReceivedImage, parameters: GadgetParameters) -> ismrmrd.Image:
    head = received.image.getHead()
    try:
        head.image_series_index = output_series_index(head.image_series_index, parameters)
    except ValueError:
        head.image_series_index = MAX_SERIES_INDEX  # only error copies get here: prepare_slice checks first
    try:
        meta = without_earlier_results(received.image.meta)
    except Exception:  # the error copies come here too: whatever the attributes hold, the copy must go out
        log.exception("the original's attributes could not be copied: its copy carries only the landmark ones")
        meta = Meta()
    meta["CMRLandmark_OriginalSeriesIndex"] = str(received.image.getHead().image_series_index)
    meta[DATA_ROLE_META] = DATA_ROLE
    _append_once(meta, "GADGETRON_ImageProcessingHistory", "CMRLANDMARK")
    _append_once(meta, "GADGETRON_SeqDescription", SEQUENCE_DESCRIPTION_SUFFIX)
    return ismrmrd.Image(head=head, meta=meta, data=received.image.data.copy())


def without_earlier_results(meta: Meta) -> Meta:
    """A deep copy of an image's attributes (lists inside are appended to) without what this gadget wrote on an
    earlier pass (an image that carries CMRLandmark_Status: a replayed output, a second landmark gadget in a chain):
    its CMRLandmark_* attributes and its image comments (:data:`OWN_COMMENT`), which would contradict this pass
    where a landmark is no longer found or detection fails. Everything else stays, whatever its name or value (an
    attribute XML may hold an empty name or value: None here)."""
    kept = Meta({key: copy.deepcopy(value) for key, value in meta.items()
                 if not (isinstance(key, str) and key.startswith(ATTRIBUTE_PREFIX))})
    if f"{ATTRIBUTE_PREFIX}Status" in meta and "GADGETRON_ImageComment" in kept:
        comments = kept.pop("GADGETRON_ImageComment")
        kept["GADGETRON_ImageComment"] = [
            comment for comment in (comments if isinstance(comments, list) else [comments])
            if not (isinstance(comment, str) and OWN_COMMENT.fullmatch(comment))]
    return kept


def _append_once(meta: Meta, key: str, value: str) -> None:
    """Append ``value`` to attribute ``key`` unless an earlier pass of this gadget already did."""
    present = meta.get(key)
    if value not in (present if isinstance(present, list) else [present]):
        meta.append(key, value)


def _format(value: float) -> str:
    return f"{value:.4f}"


def annotated_image(received: ReceivedImage, result: SliceResult, phase_index: int,
                    parameters: GadgetParameters) -> ismrmrd.Image:
    """The copy of one original with crosses and the CMRLandmark_* attributes (see docs/gadget.md)."""
    output = _copy_for_output(received, parameters)
    found = result.landmarks[phase_index]
    head = output.getHead()
    meta = output.meta
    meta["CMRLandmark_Status"] = "ok"
    tag_with_model(meta, result)
    meta["CMRLandmark_PixelSpacing_mm"] = [_format(v) for v in result.spacing_mm]
    # the points this phase's own detection found, and those filled in from its neighbours (a long-axis cine's weak
    # or missing ones), which carry _found=1 too: "LAX landmarks 2/3 + 1 filled"
    filled = 0
    for name in LANDMARKS_BY_VIEW[result.view]:
        landmark = found.get(name)
        meta[f"CMRLandmark_{name}_found"] = "1" if landmark is not None else "0"
        if result.filled is not None:
            is_filled = result.filled[phase_index][name]
            meta[f"CMRLandmark_{name}_filled"] = "1" if is_filled else "0"
            filled += landmark is not None and is_filled
        if landmark is None:
            continue
        patient = pixel_to_patient_mm(np.array([[landmark.row, landmark.col]]), tuple(head.position),
                                      tuple(head.read_dir), tuple(head.phase_dir), tuple(head.field_of_view),
                                      tuple(head.matrix_size))[0]
        meta[f"CMRLandmark_{name}_pixel"] = [_format(landmark.row), _format(landmark.col)]
        meta[f"CMRLandmark_{name}_patient_mm"] = [_format(v) for v in patient]
        meta[f"CMRLandmark_{name}_probability"] = _format(landmark.probability)
    count = f"{result.view.upper()} landmarks {sum(v is not None for v in found.values()) - filled}/{len(found)}"
    comments = [count + (f" + {filled} filled" if filled else "")]
    for measure, value in result.measures[phase_index].items():
        meta[f"CMRLandmark_{measure}"] = _format(rounded_measure(measure, value, 4))
    measures = result.measures[phase_index]
    if "LVLength_mm" in measures:
        comments.append(f"LV length {measures['LVLength_mm']:.1f} mm")
    if "LongitudinalShortening" in measures:  # the cine's, on each of its phases: what the console shows beside it
        comments.append(f"LS {100 * measures['LongitudinalShortening']:.0f} %")
    if "RVInsertionAngle_deg" in measures:
        comments.append(f"RVI angle {measures['RVInsertionAngle_deg']:.0f} deg")
    for comment in comments:
        meta.append("GADGETRON_ImageComment", comment)
    if parameters.draw_landmarks:
        filled_here = result.filled[phase_index] if result.filled is not None else {}
        detected = [(lm.row, lm.col) for name, lm in found.items() if lm is not None and not filled_here.get(name)]
        estimated = [(lm.row, lm.col) for name, lm in found.items() if lm is not None and filled_here.get(name)]
        output = ismrmrd.Image(head=head, meta=meta,
                               data=draw_crosses(output.data, detected, result.spacing_mm, parameters.cross_size_mm,
                                                 lv_length_segments(found, measures), estimated))
    return output


def lv_length_segments(found: ImageLandmarks, measures: dict[str, float]
                       ) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The line the LV length was measured along (apex to mitral midpoint, pixels), where this phase has one: drawn
    so that the number in the comment can be checked by eye."""
    if "LVLength_mm" not in measures:
        return []
    mv1, mv2, apex = found["MV-1"], found["MV-2"], found["APEX"]
    return [((apex.row, apex.col), ((mv1.row + mv2.row) / 2.0, (mv1.col + mv2.col) / 2.0))]


# What a failed copy's comment says went wrong, in words a technologist can pass on (the whole message is in
# CMRLandmark_Error and the log, which a console does not show).
FAILURE_KINDS = ("chain setting", "model file", "data", "internal error")


def error_image(received: ReceivedImage, message: str, parameters: GadgetParameters, kind: str) -> ismrmrd.Image:
    """The copy of one original, without crosses, tagged with what went wrong: ``message`` in full, ``kind`` (one of
    :data:`FAILURE_KINDS`) in its comment."""
    if kind not in FAILURE_KINDS:
        raise ValueError(f"kind: one of {FAILURE_KINDS}, got {kind!r}")
    output = _copy_for_output(received, parameters)
    output.meta["CMRLandmark_Status"] = "error"
    output.meta["CMRLandmark_Error"] = message
    output.meta.append("GADGETRON_ImageComment", f"landmark detection failed ({kind})")
    return output


def left_out_image(received: ReceivedImage, result: SliceResult, error: ValueError,
                   parameters: GadgetParameters) -> ismrmrd.Image:
    """The copy of a phase the model could not use, in a slice whose other phases were detected: tagged with the
    error, and with the slice's model, view and sequence."""
    output = error_image(received, f"{type(error).__name__}: {error}", parameters, "data")
    tag_with_model(output.meta, result)
    return output


def tag_with_model(meta: Meta, result: SliceResult) -> None:
    """The model, view and sequence a slice was detected with, on each of its copies."""
    meta["CMRLandmark_Model"] = result.model
    meta["CMRLandmark_View"] = result.view
    meta["CMRLandmark_Sequence"] = result.sequence


class SeriesIndexUse:
    """The series indices of one stream's originals and copies, to catch copies that land in a series the
    originals use (a chain whose series numbers are ``series_index_offset`` apart): a viewer would mix the two in
    one series. Warned once per series; a copy sent after the clash is known is tagged
    CMRLandmark_SeriesIndexClash=1."""

    def __init__(self) -> None:
        self.originals: set[int] = set()
        self.copies: set[int] = set()
        self.warned: set[int] = set()

    def noted_original(self, received: ReceivedImage) -> ReceivedImage:
        index = received.image.getHead().image_series_index
        self.originals.add(index)
        if index in self.copies:
            self._warn(index)
        return received

    def note_copy(self, image: ismrmrd.Image) -> None:
        index = image.getHead().image_series_index
        self.copies.add(index)
        if index in self.originals:
            image.meta[f"{ATTRIBUTE_PREFIX}SeriesIndexClash"] = "1"
            self._warn(index)

    def _warn(self, index: int) -> None:
        if index not in self.warned:
            self.warned.add(index)
            log.warning("series %d holds both original images and landmark copies: give series_index_offset a "
                        "value that moves the copies to a series the chain does not use", index)
