"""The inline gadget's library: a chain of generators over a Gadgetron connection.

    connection -> pass_originals -> slice_batches -> arrived_together -> landmark_outputs -> connection.send

- every item goes back downstream as soon as it is read, images as the exact bytes that came in
  (:mod:`cmr_landmark.mrd_connection`). One thread runs the chain, so an item that arrives while a slice is being
  detected is read after it;
- the images are buffered per slice (:mod:`cmr_landmark.series`), and each complete slice is detected in one
  batch (all phases, same crop), measured (:mod:`cmr_landmark.slice_measures`), and its annotated, tagged copies
  (:mod:`cmr_landmark.output_images`) sent as a new series (image_series_index + ``series_index_offset``);
- whatever fails for a slice, its originals have already gone out; the slice's copies are sent tagged
  CMRLandmark_Status=error with the message, without crosses.

:func:`landmark_detection` is the target Gadgetron starts (``python -m gadgetron PORT
gadgets.cmr_landmark_gadget landmark_detection``); :mod:`cmr_landmark.server` is the passive mode (this process
listens and Gadgetron, or any MRD client, connects).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ismrmrd
import ismrmrd.xsd
import numpy as np
import torch
from gadgetron.external import Connection
from gadgetron.external.constants import (
    GADGET_MESSAGE_IMAGE_ARRAY,
    GADGET_MESSAGE_ISMRMRD_ACQUISITION,
    GADGET_MESSAGE_RECON_DATA,
)

from .config import DATA_ROLE_META, GADGET_LOGGER
from .detector import Detector, ImageLandmarks, default_device, detect_in_orientation
from .gadget_parameters import GadgetParameters, ParameterError, gadget_configuration, properties_from_config
from .geometry import GeometryError, model_display_orientation, pixel_spacing_mm, pixel_to_patient_mm
from .image_checks import label_map_reason, no_signal_reason
from .model_choice import header_texts, meta_texts, meta_values, sequence_from_texts, view_from_texts
from .model_store import ModelError, find_model, warn_once_per_scan, warnings_said_afresh
from .mrd_connection import (
    EndOfStream,
    ReceivedImage,
    ReceivedItem,
    StreamError,
    data_waiting,
    guard_against_eof,
    keep_items_as_received,
)
from .output_images import (
    SeriesIndexUse,
    SliceResult,
    annotated_image,
    error_image,
    left_out_image,
    output_series_index,
)
from .series import SeriesBuffer, SliceBatch
from .slice_measures import measure_slice, with_left_out_phases

log = logging.getLogger(GADGET_LOGGER)


# --- models: loaded once per process ---------------------------------------------------------------------------

_detectors: dict[tuple[str, str, str], Detector] = {}
_detectors_lock = threading.Lock()


def torch_device(name: str) -> torch.device:
    if name == "auto":
        return default_device()
    if name == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device=cuda was asked for but torch sees no GPU")
    return torch.device(name)


def cached_detector(view: str, sequence: str, model_name: str, device: str) -> Detector:
    """The Detector for (view, sequence) or the named model, loaded (and sha256-checked) once per process."""
    spec = find_model(view, sequence, name=model_name or None)
    if spec.view != view:  # its points would be read, named and measured as the other view's
        raise ParameterError(f"model={spec.name} is a {spec.view} model; this series is {view}")
    target = torch_device(device)
    key = (spec.name, spec.sha256, str(target))
    with _detectors_lock:
        if key not in _detectors:
            log.info("loading model %s (%s/%s) on %s", spec.name, spec.view, spec.sequence, target)
            _detectors[key] = Detector(spec, device=target)
        return _detectors[key]


def choose_view_and_sequence(
    parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None, meta: dict
) -> tuple[str, str]:
    """The parameters' view/sequence, or for 'auto' the rule of :mod:`cmr_landmark.model_choice`.
    An unknown view is an error (no safe default); an unknown sequence asks for the contrast-agnostic model
    ('any'; model_store.find_model)."""
    texts = header_texts(header) + meta_texts(meta)
    view, sequence = view_and_sequence_told(parameters, texts)
    if parameters.view != "auto" and (said := view_from_texts(texts)) not in (None, parameters.view):
        # the setting wins (a protocol name can mislead), but a wrong one runs the other view's model on every slice;
        # the message holds nothing that varies per image, so that the scan's log says it once
        warn_once_per_scan(f"view={parameters.view} is set, but the protocol texts (header, image comments) say "
                           f"{said}: the {parameters.view} model runs, as set", log)
    if view is None:
        raise ParameterError(f"cannot tell the view (sax/lax) from the protocol texts {texts}; set the view parameter "
                             "(a chain's <property name=\"view\">, replay's --set view=sax|lax)")
    if sequence is None:
        # the image comments may change from image to image: left out of the message, so that a scan says it once
        warn_once_per_scan(f"cannot tell the sequence from the protocol texts {header_texts(header)} or the image "
                           "comments: using the contrast-agnostic model", log)
        sequence = "any"
    return view, sequence


def view_and_sequence_told(parameters: GadgetParameters, texts: list[str]) -> tuple[str | None, str | None]:
    """The view and sequence the parameters give, or for 'auto' what ``texts`` tell (None where they do not)."""
    view = parameters.view if parameters.view != "auto" else view_from_texts(texts)
    sequence = parameters.sequence if parameters.sequence != "auto" else sequence_from_texts(texts)
    return view, sequence


MAX_WARM_UP_IMAGES = 64


def load_model_before_images(parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None) -> None:
    """Load and run once the model this stream will use, where the chain and the header already say which.

    A process's first call of a model pays for building its kernels (about 90 ms on the 2-core machine), and
    Gadgetron's active mode starts a process per scan; the configuration and header come when the scan starts,
    seconds before its first image. Where the model depends on the first image's attributes, or anything stops
    it, nothing is done here: the first slice loads the model and meets (and reports) any error itself."""
    view, sequence = view_and_sequence_told(parameters, header_texts(header))
    if view is None or (sequence is None and not parameters.model):
        return
    try:
        detector = cached_detector(view, sequence or "any", parameters.model, parameters.device)
        # a cine slice's phases come as one batch (capped: a header's phase count may be wrong, docs/gadget.md)
        detector.warm_up(min(parameters.phases_per_slice_count(header) or 1, MAX_WARM_UP_IMAGES))
    except Exception as error:  # the first slice meets it again and tags its copies with it
        log.info("model not loaded before the images: %s", error)


# --- the data path ---------------------------------------------------------------------------------------------


# Messages that hold images this gadget cannot detect on: a chain that places it before ImageArraySplitGadget, or
# before the reconstruction, sends these. They pass on untouched; the physicist needs to hear why nothing appears.
UNDETECTED_IMAGE_MESSAGES = {
    GADGET_MESSAGE_IMAGE_ARRAY: "image arrays (place the gadget after ImageArraySplitGadget and ComplexToFloatGadget)",
    GADGET_MESSAGE_RECON_DATA: "k-space (place the gadget after the reconstruction and ImageArraySplitGadget)",
    GADGET_MESSAGE_ISMRMRD_ACQUISITION: "raw acquisitions (place the gadget after the reconstruction)",
}


def pass_originals(connection: Connection) -> Iterator[ReceivedImage]:
    """Send every item straight back downstream, as the bytes that came in, then hand the images on for
    detection."""
    warned: set[int] = set()
    try:
        for item in connection:
            connection.send(item)
            if isinstance(item, ReceivedItem) and item.message_id in UNDETECTED_IMAGE_MESSAGES:
                if item.message_id not in warned:
                    warned.add(item.message_id)
                    log.warning("this gadget received %s: they pass on unchanged and no landmarks are detected on "
                                "them", UNDETECTED_IMAGE_MESSAGES[item.message_id])
            elif isinstance(item, ReceivedImage):
                if item.meta_error:
                    log.warning("%s: the image went on unchanged, its copy carries only the landmark attributes",
                                item.meta_error)
                yield item
    except EndOfStream:
        # The client stopped sending without CLOSE: finish what is buffered, as at a normal end of stream.
        log.warning("the stream ended without a CLOSE message")
    except StreamError as error:
        log.error("stream stopped: %s; the slices received so far are still processed", error)
    except Exception:  # whatever broke the reading, what was received is still processed
        log.exception("stream stopped by an unexpected error; the slices received so far are still processed")


def data_roles(image: ismrmrd.Image) -> tuple[str, ...]:
    """The image's GADGETRON_DataRole values (Gadgetron's map fitting marks maps "T1", their SD maps "T1SD")."""
    return tuple(meta_values(image.meta, DATA_ROLE_META))


def of_chosen_roles(images: Iterator[ReceivedImage], parameters: GadgetParameters) -> Iterator[ReceivedImage]:
    """The images whose data role the chain's ``data_roles`` chooses; each other role is logged once, so that a
    chain whose maps carry another role than expected says why nothing is detected."""
    passed_over: set[tuple[str, ...]] = set()
    for received in images:
        roles = data_roles(received.image)
        if parameters.detects_data_role(roles):
            yield received
        elif roles not in passed_over:
            passed_over.add(roles)
            log.warning("images of %s %s pass on without landmarks: data_roles=%s chooses others",
                        DATA_ROLE_META, "/".join(roles), ",".join(parameters.data_roles))


def slice_batches(images: Iterator[ReceivedImage], phases_per_slice: int | None) -> Iterator[SliceBatch]:
    """Group images into slices (all phases), releasing each when complete and the rest at the end."""
    buffer: SeriesBuffer[ReceivedImage] = SeriesBuffer(phases_per_slice)
    for received in images:
        head = received.image.getHead()
        yield from buffer.add(received, head.image_series_index, head.slice, head.phase)
    yield from buffer.flush()


class ImageFault(ValueError):
    """The images of a slice cannot be detected on (blank, 3-D, phases that do not match, no header): a fault of
    the data, said in one line on the log and on the copies, not a failure of the gadget."""


def magnitude_2d(image: ismrmrd.Image) -> np.ndarray:
    """The (rows, cols) magnitude of a 2-D image: root-sum-of-squares over channels, |.| of complex data."""
    data = image.data  # (channels, z, y, x)
    if data.shape[1] != 1:
        raise ImageFault(f"landmark detection needs 2-D images, got {data.shape[1]} partitions (z)")
    if data.shape[0] == 1:  # one channel, the usual reconstructed image: |.| alone, without float64 squares
        plane = data[0, 0]
        return np.abs(plane if np.iscomplexobj(plane) else plane.astype(np.float32)).astype(np.float32, copy=False)
    planes = data[:, 0].astype(np.complex128 if np.iscomplexobj(data) else np.float64)  # no integer overflow in |.|
    return np.sqrt(np.sum(np.abs(planes) ** 2, axis=0)).astype(np.float32)


def check_usable(plane: np.ndarray, phase: int) -> None:
    """Refuse an image the model cannot work on or would only hallucinate on: smaller than 2 x 2, nothing in it
    (no finite pixel, or every finite pixel one value, e.g. all zero), or a label map (a segmentation series sent
    down the chain). Some NaN/Inf pixels are allowed (preprocessing sets them to 0)."""
    if min(plane.shape) < 2:
        raise ImageFault(f"phase {phase} is {plane.shape[0]} x {plane.shape[1]} pixels: at least 2 x 2 are needed")
    if reason := no_signal_reason(plane):
        raise ImageFault(f"phase {phase} has {reason}")
    if reason := label_map_reason(plane):
        raise ImageFault(f"phase {phase} {reason}")


@dataclass
class PreparedSlice:
    """One slice checked and ready for the model: its view, model, pixel spacing, (phases, rows, cols) pixels and
    the orientation (quarter turns, mirror) in which the model sees them (docs/gadget.md, "Orientation")."""

    heads: list
    view: str
    sequence: str
    detector: Detector
    spacing_mm: tuple[float, float]
    pixels: np.ndarray  # of the usable phases only
    orientation: tuple[int, bool]  # (quarter turns, mirror) that shows the pixels as the model was trained to see
    unusable: dict[int, ValueError]  # the slice's item index -> why the model cannot use that phase (check_usable)


def prepare_slice(
    batch: SliceBatch, parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None
) -> PreparedSlice:
    """Everything before the model for one slice (raises on anything that stops it)."""
    images = [received.image for received in batch.items]
    heads = [image.getHead() for image in images]
    output_series_index(batch.series_index, parameters)
    view, sequence = choose_view_and_sequence(parameters, header, dict(images[0].meta))
    detector = cached_detector(view, sequence, parameters.model, parameters.device)
    for h in heads:  # a plane that cannot place the points in the patient fails here, before the model runs
        pixel_to_patient_mm(np.zeros((0, 2)), tuple(h.position), tuple(h.read_dir), tuple(h.phase_dir),
                            tuple(h.field_of_view), tuple(h.matrix_size))
    spacings = {pixel_spacing_mm(tuple(h.field_of_view), tuple(h.matrix_size)) for h in heads}
    shapes = {tuple(h.matrix_size) for h in heads}
    if len(spacings) != 1 or len(shapes) != 1:
        raise ImageFault(f"the phases of slice {batch.slice} differ in matrix {shapes} or pixel spacing {spacings}")
    pixels = np.stack([magnitude_2d(image) for image in images])
    orientations = {model_display_orientation(view, tuple(h.read_dir), tuple(h.phase_dir),
                                              detector.spec.display_rv_direction_deg) for h in heads}
    if len(orientations) != 1:
        raise ImageFault(f"the phases of slice {batch.slice} differ in orientation (read_dir/phase_dir)")
    # A blank or corrupt phase is left out, not the whole slice: one lost frame must not cost a cine its measures.
    unusable = {}
    for index, (phase, plane) in enumerate(zip(batch.phases, pixels, strict=True)):
        try:
            check_usable(plane, phase)
        except ValueError as error:
            unusable[index] = error
    if len(unusable) == len(images):
        raise ImageFault("; ".join(str(error) for error in unusable.values()))
    usable = [index for index in range(len(images)) if index not in unusable]
    return PreparedSlice(heads, view, sequence, detector, spacings.pop(), pixels[usable], orientations.pop(),
                         unusable)


def finish_slice(prepared: PreparedSlice, landmarks: list[ImageLandmarks], parameters: GadgetParameters) -> SliceResult:
    """Everything after the model for one slice (``landmarks``: the usable phases'): anatomical A/P naming, cine
    smoothing, measures (:func:`slice_measures.measure_slice`, as offline detection does). A phase left out stays
    in the slice with nothing found, so that a cine is smoothed over its real phases and the gap filled."""
    threshold = parameters.probability_threshold
    measured = measure_slice(
        with_left_out_phases(landmarks, prepared.unusable, len(prepared.heads), prepared.view), prepared.view,
        prepared.spacing_mm,
        prepared.detector.spec.probability_threshold if threshold is None else threshold,
        [(tuple(head.read_dir), tuple(head.phase_dir)) for head in prepared.heads])
    return SliceResult(prepared.detector.spec.name, prepared.view, prepared.sequence, prepared.spacing_mm,
                       measured.landmarks, measured.measures, measured.filled, prepared.unusable)


def detect_slice(
    batch: SliceBatch, parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None
) -> SliceResult:
    """Detection and measures for all phases of one slice, in one model batch (raises on anything that stops it)."""
    prepared = prepare_slice(batch, parameters, header)
    landmarks = detect_in_orientation(prepared.detector, prepared.pixels, prepared.spacing_mm, *prepared.orientation,
                                      same_slice=True, probability_threshold=parameters.probability_threshold)
    return finish_slice(prepared, landmarks, parameters)


def detect_stack(
    batches: list[SliceBatch], parameters: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None
) -> list[SliceResult]:
    """Single-phase slices that arrived together (a SAX stack, LGE) through the model in one batch.

    A batch of one image leaves most of the CPU idle; a stack in one call is several times faster. Raises when
    the slices cannot share one call (another model, matrix, spacing or orientation, or a slice that cannot be
    processed): the
    caller then goes slice by slice, so each slice still gets its own result or error.
    """
    prepared = [prepare_slice(batch, parameters, header) for batch in batches]
    first = prepared[0]
    for other in prepared:
        if (other.detector is not first.detector or other.spacing_mm != first.spacing_mm
                or other.pixels.shape != first.pixels.shape or len(other.pixels) != 1
                or other.orientation != first.orientation):
            raise ValueError("the slices differ in model, matrix, pixel spacing or orientation")
    found = detect_in_orientation(first.detector, np.concatenate([p.pixels for p in prepared]), first.spacing_mm,
                                  *first.orientation, probability_threshold=parameters.probability_threshold)
    return [finish_slice(p, [landmarks], parameters) for p, landmarks in zip(prepared, found, strict=True)]


# At most this many single-phase slices share one model call: a whole file replayed at once must not become one
# batch of hundreds of images (memory, and no copy out until all are done). A stack of LGE slices fits in one.
MAX_SLICES_PER_CALL = 32


def arrived_together(batches: Iterator[SliceBatch], more_waiting: Callable[[], bool]) -> Iterator[list[SliceBatch]]:
    """Single-phase slices that have already arrived, grouped so the model runs once for them.

    A slice is never held back for data that has not arrived: a group ends as soon as nothing more is waiting on
    the connection (``more_waiting``), so slices acquired one breath-hold apart still come out one by one, or when
    it holds :data:`MAX_SLICES_PER_CALL`. Multi-phase slices (cine) are their own group.
    """
    group: list[SliceBatch] = []
    for batch in batches:
        if len(batch.items) > 1:
            if group:
                yield group
                group = []
            yield [batch]
            continue
        group.append(batch)
        if len(group) == MAX_SLICES_PER_CALL or not more_waiting():
            yield group
            group = []
    if group:
        yield group


def landmark_outputs(groups: Iterator[list[SliceBatch]], parameters: GadgetParameters | ParameterError,
                     header: ismrmrd.xsd.ismrmrdHeader | None) -> Iterator[ismrmrd.Image]:
    """The annotated (or error-tagged) copies of each slice, in phase order."""
    # A parameter error still needs an offset for the tagged copies: the default one.
    usable = parameters if isinstance(parameters, GadgetParameters) else GadgetParameters()
    for group in groups:
        results: list[SliceResult | None] = [None] * len(group)
        if len(group) > 1 and isinstance(parameters, GadgetParameters) and header is not None:
            try:
                results = list(detect_stack(group, usable, header))
            except Exception as error:  # one model call was not possible: slice by slice below, errors per slice
                log.info("slices %s one at a time: %s", [batch.slice for batch in group], error)
        for batch, result in zip(group, results, strict=True):
            yield from slice_outputs(batch, result, parameters, usable, header)


def slice_outputs(batch: SliceBatch, result: SliceResult | None, parameters: GadgetParameters | ParameterError,
                  usable: GadgetParameters, header: ismrmrd.xsd.ismrmrdHeader | None) -> list[ismrmrd.Image]:
    """One slice's copies: annotated from ``result`` (detected here when None), or tagged with the error."""
    try:
        if isinstance(parameters, ParameterError):
            raise parameters
        if header is None:
            raise ImageFault("the ISMRMRD header could not be parsed")
        if result is None:
            result = detect_slice(batch, usable, header)
        if result.unusable:
            log.error("series %d slice %d: phase(s) left out: %s", batch.series_index, batch.slice,
                      "; ".join(str(error) for error in result.unusable.values()))
        return [left_out_image(received, result, result.unusable[i], usable) if i in result.unusable
                else annotated_image(received, result, i, usable) for i, received in enumerate(batch.items)]
    except Exception as error:  # never lose a slice: whatever failed is reported on its copies
        kind = failure_kind(error)
        if kind != "internal error":  # a setting, the installation or the data, not the gadget: one line, no traceback
            log.error("no landmarks for series %d slice %d: %s: %s", batch.series_index, batch.slice,
                      type(error).__name__, error)
        else:
            log.exception("landmark detection failed for series %d slice %d", batch.series_index, batch.slice)
        return [error_image(received, f"{type(error).__name__}: {error}", usable, kind) for received in batch.items]


def failure_kind(error: Exception) -> str:
    """Which of :data:`output_images.FAILURE_KINDS` an error of a slice is: whom a technologist should tell."""
    if isinstance(error, ParameterError):
        return "chain setting"
    if isinstance(error, ModelError):
        return "model file"
    if isinstance(error, ImageFault | GeometryError):  # the images or the stream's header
        return "data"
    return "internal error"


def checked_on_this_machine(parameters: GadgetParameters) -> GadgetParameters:
    """``parameters``, refused with a :class:`ParameterError` where they name a model the manifest does not list or
    a GPU this machine lacks: a setting, found when the chain is read, not a failure of every slice."""
    torch_device(parameters.device)
    if parameters.model:
        try:
            find_model("", "", name=parameters.model)
        except ModelError as error:
            raise ParameterError(f"gadget parameter model={parameters.model!r}: {error}") from error
    return parameters


def landmark_detection(connection: Connection, default_properties: dict[str, str] | None = None) -> None:
    """The gadget: originals out first and unchanged, then each slice's annotated copies (module docstring)."""
    guard_against_eof(connection)
    keep_items_as_received(connection)
    warnings_said_afresh()  # this scan's log says a fallback model once, not once per slice
    properties = dict(default_properties or {})
    parameters: GadgetParameters | ParameterError
    try:
        # Gadgetron sends this gadget's own <configuration>; a client of a passive server may send the whole chain
        own = gadget_configuration(connection.config) if connection.config is not None else None
        properties.update(properties_from_config(own))
        parameters = checked_on_this_machine(GadgetParameters.from_strings(properties))
    except ParameterError as error:
        log.error("%s: images pass through, their copies are tagged with the error", error)
        parameters = error
    header = connection.header
    if isinstance(parameters, GadgetParameters):
        load_model_before_images(parameters, header)
    usable = parameters if isinstance(parameters, GadgetParameters) else GadgetParameters()
    series_use = SeriesIndexUse()
    originals = (series_use.noted_original(received) for received in pass_originals(connection))
    batches = slice_batches(of_chosen_roles(originals, usable), usable.phases_per_slice_count(header))
    groups = arrived_together(batches, lambda: data_waiting(connection))
    for image in landmark_outputs(groups, parameters, header):
        series_use.note_copy(image)
        connection.send(image)


