"""Speed of the landmark gadget, against a paper-sized reference network, and the fast path's accuracy cost.

    python benchmarks/run_benchmarks.py [--quick] [--out docs/benchmarks.md]

- end to end through the gadget over a real socket (``cmr-landmark serve`` in a subprocess, model loaded once and
  warmed up; one connection per series, as Gadgetron opens one per scan): first image sent -> last annotated copy
  received, for a 30-phase LAX cine slice (208 x 256 matrix, 1.4 mm) and a 12-slice SAX stack (1 phase each);
- in process, on the same series: the detector per series and per image, split into preprocessing, model and
  decoding; the gadget's peak resident memory (VmHWM);
- a reference network of the size Xue et al. ran (``reference_unet.py``: residual U-Net, 2.5 M parameters,
  1 mm / 352 px, fp32, argmax decoding) on the same series with the same preprocessing, and the ratio;
- the optimisations tried, one by one (``--options``);
- the fast path against the unoptimised one (fp32, per-image preprocessing) on the validation slices of
  the trained cine models, when models/ has them and the public data are present.

The images are the shipped samples (M&Ms-2 subject 001) resampled to the benchmark geometry. Without trained
models in models/ (or ``--models``), randomly initialised cascades of the shipped architecture are timed (timing
does not depend on the weights; their threshold 0 makes every landmark "found", the most annotation work).
``--out`` replaces the part of the file between the RESULTS markers (or writes the file).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from cmr_landmark.config import (
    COARSE_GRID,
    FINE_GRID_BY_VIEW,
    REPO_ROOT,
    StageGrid,
    models_dir,
    prefer_passive_openmp_waits,
)

prefer_passive_openmp_waits()  # as the gadget process does, before torch is imported: in-process numbers match it

import ismrmrd  # noqa: E402
import ismrmrd.xsd  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ismrmrd.image import get_dtype_from_data_type  # noqa: E402
from ismrmrd.serialization import ConfigText, ProtocolSerializer  # noqa: E402
from scipy import ndimage  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_unet import REFERENCE_GRID_MM, REFERENCE_GRID_PX, ReferenceResUNet, argmax_points  # noqa: E402
from timing import median_seconds  # noqa: E402

from cmr_landmark.detector import (  # noqa: E402
    Detector,
    bf16_faster_on_cpu,
    crop_centres,
    restrict_to_coarse_windows,
)
from cmr_landmark.export import export_cascade, freeze_cascade  # noqa: E402
from cmr_landmark.gadget import MAX_SLICES_PER_CALL  # noqa: E402
from cmr_landmark.geometry import distances_mm  # noqa: E402
from cmr_landmark.heatmaps import decode_heatmaps  # noqa: E402
from cmr_landmark.io.ismrmrd_file import read_ismrmrd_images  # noqa: E402
from cmr_landmark.model_store import ModelError, ModelSpec, find_model  # noqa: E402
from cmr_landmark.network import LandmarkCascade, UNet, count_parameters  # noqa: E402
from cmr_landmark.preprocess import grid_transform, normalise_stack, preprocess, resample_stack  # noqa: E402
from cmr_landmark.unfreeze import folded_cascade  # noqa: E402

SAMPLES = REPO_ROOT / "samples"
RESULTS_START = "<!-- RESULTS:START (benchmarks/run_benchmarks.py writes this part) -->"
RESULTS_END = "<!-- RESULTS:END -->"
MESSAGE_ID = struct.Struct("<H")
IMAGE_MESSAGE, CLOSE_MESSAGE = 1022, 4
# Gadgetron sends the configuration and header when the scan starts, seconds before the first image: give the
# gadget that time to parse them (the xsdata header parser alone takes ~20 ms) outside the timed span.
OPENING_LEAD_S = 0.2
REFERENCE_CHUNK = 10  # images per reference forward pass: a whole 30-phase batch at 352 px needs several GB
ACCURACY_DATASETS = {"sax": ("acdc", "myops", "mnms2"), "lax": ("mnms2",)}  # the training runs' val sets


# --- the series -------------------------------------------------------------------------------------------------


@dataclass
class Series:
    """One benchmark series: what goes over the wire and the same pixels for in-process timing."""

    name: str
    view: str
    header_xml: str
    images: list[ismrmrd.Image]
    slices: list[np.ndarray]  # (phases, rows, cols) per slice, as the gadget batches them
    spacing_mm: tuple[float, float]

    @property
    def n_images(self) -> int:
        return len(self.images)


def _resampled(pixels: np.ndarray, spacing_mm: float, target_mm: float, shape: tuple[int, int]) -> np.ndarray:
    """``pixels`` at ``target_mm`` per pixel, centre-cropped/padded to ``shape``, as int16 like the scanner's."""
    zoomed = ndimage.zoom(pixels.astype(np.float32), spacing_mm / target_mm, order=1)
    out = np.zeros(shape, dtype=np.float32)
    rows, cols = min(shape[0], zoomed.shape[0]), min(shape[1], zoomed.shape[1])
    r0, c0 = (zoomed.shape[0] - rows) // 2, (zoomed.shape[1] - cols) // 2
    o0, p0 = (shape[0] - rows) // 2, (shape[1] - cols) // 2
    out[o0:o0 + rows, p0:p0 + cols] = zoomed[r0:r0 + rows, c0:c0 + cols]
    return np.clip(np.rint(out), 0, np.iinfo(np.int16).max).astype(np.int16)


def _image(pixels: np.ndarray, like: ismrmrd.Image, spacing_mm: float, slice_index: int, phase: int,
           image_index: int) -> ismrmrd.Image:
    image = ismrmrd.Image.from_array(pixels[np.newaxis, np.newaxis])
    head = image.getHead()
    source = like.getHead()
    for name in ("position", "read_dir", "phase_dir", "slice_dir", "image_type"):
        setattr(head, name, getattr(source, name))
    head.field_of_view = (pixels.shape[1] * spacing_mm, pixels.shape[0] * spacing_mm, source.field_of_view[2])
    head.image_series_index, head.slice, head.phase, head.image_index = 1, slice_index, phase, image_index
    image.setHead(head)
    return image


def _header_xml(source: ismrmrd.xsd.ismrmrdHeader, shape: tuple[int, int], spacing_mm: float, phases: int,
                slices: int) -> str:
    for space in (source.encoding[0].encodedSpace, source.encoding[0].reconSpace):
        space.matrixSize.x, space.matrixSize.y = shape[1], shape[0]
        space.fieldOfView_mm.x, space.fieldOfView_mm.y = shape[1] * spacing_mm, shape[0] * spacing_mm
    limits = source.encoding[0].encodingLimits
    limits.phase.maximum, limits.slice.maximum = phases - 1, slices - 1
    return ismrmrd.xsd.ToXML(source)


def lax_cine_series(phases: int = 30, shape: tuple[int, int] = (208, 256), spacing_mm: float = 1.4) -> Series:
    """The sample 4-chamber cine (25 phases, 1.72 mm) at ``spacing_mm`` on ``shape``, its phases cycled to
    ``phases`` (a 30-phase cine of a typical 256 x 208 acquisition)."""
    header, originals = read_ismrmrd_images(SAMPLES / "mnms2_001_lax_4ch_cine.h5")
    source_mm = float(originals[0].field_of_view[0]) / originals[0].matrix_size[0]
    stack = np.stack([_resampled(originals[p % len(originals)].data[0, 0], source_mm, spacing_mm, shape)
                      for p in range(phases)])
    images = [_image(stack[p], originals[0], spacing_mm, 0, p, p + 1) for p in range(phases)]
    return Series(f"LAX cine, {phases} phases, {shape[0]} x {shape[1]}, {spacing_mm} mm", "lax",
                  _header_xml(header, shape, spacing_mm, phases, 1), images, [stack], (spacing_mm, spacing_mm))


def sax_stack_series() -> Series:
    """The sample short-axis stack (12 slices, 256 x 256, 1.48 mm), end-diastole only: 12 slices of 1 phase."""
    header, originals = read_ismrmrd_images(SAMPLES / "mnms2_001_sax.h5")
    first_phase = [image for image in originals if image.phase == 0]
    spacing_mm = float(first_phase[0].field_of_view[0]) / first_phase[0].matrix_size[0]
    slices = [image.data[0, 0].copy() for image in first_phase]
    images = [_image(pixels, image, spacing_mm, image.slice, 0, i + 1)
              for i, (pixels, image) in enumerate(zip(slices, first_phase, strict=True))]
    for image, original in zip(images, first_phase, strict=True):  # each slice keeps its own position
        head = image.getHead()
        head.position = original.getHead().position
        image.setHead(head)
    shape = slices[0].shape
    return Series(f"SAX stack, {len(slices)} slices x 1 phase, {shape[0]} x {shape[1]}, {spacing_mm:.2f} mm", "sax",
                  _header_xml(header, shape, spacing_mm, 1, len(slices)), images,
                  [pixels[np.newaxis] for pixels in slices], (spacing_mm, spacing_mm))


# --- models -----------------------------------------------------------------------------------------------------


def trained_spec(view: str, folder: Path | None = None) -> ModelSpec | None:
    """The trained cine model for ``view`` in the manifest, or None."""
    try:
        return find_model(view, "cine", folder=folder)
    except ModelError:
        return None


def prepare_models(folder: Path, source: Path | None, random_only: bool = False) -> dict[str, str]:
    """A model folder for the gadget with a cine model per view: the trained one where the manifest of ``source``
    (default the repository's models/) has it (unless ``random_only``), else a random cascade of the default
    architecture (two U-Nets of widths 16-32-64-128). Returns a description per view."""
    source = source or models_dir()
    entries, described = [], {}
    for view in ("sax", "lax"):
        spec = None if random_only else trained_spec(view, source)
        if spec is not None:
            shutil.copy(spec.file, folder / spec.file.name)
            raw = json.loads((source / "manifest.json").read_text())
            entries.append(next(entry for entry in raw["models"] if entry["name"] == spec.name))
            described[view] = f"trained `{spec.name}`"
            continue
        torch.manual_seed(0)
        cascade = LandmarkCascade(UNet(3), UNet(3))
        export_cascade(cascade, f"random_{view}_cine", view, "cine", COARSE_GRID, FINE_GRID_BY_VIEW[view], 0.0,
                       folder)
        described[view] = f"random weights, default architecture ({count_parameters(cascade) / 1e6:.2f} M parameters)"
    if entries:
        path = folder / "manifest.json"
        current = json.loads(path.read_text()) if path.exists() else {"models": []}
        current["models"] += entries
        path.write_text(json.dumps(current, indent=2) + "\n")
    return described


# --- the gadget over the wire -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GadgetProcess:
    """``cmr-landmark serve`` in a subprocess (passive mode), as a warm gadget waiting for Gadgetron."""

    def __init__(self, models_folder: Path, log_path: Path, extra_env: dict[str, str | None] | None = None) -> None:
        """``extra_env``: variables to set, or with None to remove, for the gadget process."""
        self.port = free_port()
        env = {**os.environ, "CMR_LANDMARK_MODELS": str(models_folder)}
        for name, value in (extra_env or {}).items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        self._log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "cmr_landmark.cli", "serve", "--port", str(self.port)],
                                        env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gadget exited with {self.process.returncode}; see {log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the gadget did not listen within 120 s; see {log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the whole process so far (exited threads included; 10 ms ticks)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_memory_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


def _serialised(*items) -> bytes:
    buffer = BytesIO()
    serializer = ProtocolSerializer(buffer)
    for item in items:
        serializer.serialize(item)
    return buffer.getvalue()


def _read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ConnectionError("the gadget closed the connection early")
    return data


def _skip_image(stream) -> None:
    """Read past one image message body without decoding it (the client must not compete for the 2 cores)."""
    head = ismrmrd.ImageHeader.from_buffer_copy(_read_exact(stream, ctypes.sizeof(ismrmrd.ImageHeader)))
    attribute_length = struct.unpack("<Q", _read_exact(stream, 8))[0]
    itemsize = np.dtype(get_dtype_from_data_type(head.data_type)).itemsize
    _read_exact(stream, attribute_length + head.channels * int(np.prod(head.matrix_size)) * itemsize)


def time_through_gadget(port: int, series: Series, config_xml: str) -> float:
    """Seconds from the first image sent to the last image (original or annotated copy) received."""
    opening = _serialised(ConfigText(config_xml), ismrmrd.xsd.CreateFromDocument(series.header_xml))
    body = b"".join(MESSAGE_ID.pack(IMAGE_MESSAGE) + image.to_bytes() for image in series.images)
    expected = 2 * series.n_images  # every original back, then an annotated copy of each
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(opening)
        time.sleep(OPENING_LEAD_S)
        sender = threading.Thread(target=lambda: sock.sendall(body + MESSAGE_ID.pack(CLOSE_MESSAGE)), daemon=True)
        start = time.perf_counter()
        sender.start()
        received, last = 0, start
        with sock.makefile("rb") as incoming:
            while True:
                message = MESSAGE_ID.unpack(_read_exact(incoming, 2))[0]
                if message == CLOSE_MESSAGE:
                    break
                if message != IMAGE_MESSAGE:
                    raise ValueError(f"unexpected message {message} from the gadget")
                _skip_image(incoming)
                received += 1
                if received == expected:
                    last = time.perf_counter()
        sender.join(30)
    if received != expected:
        raise RuntimeError(f"expected {expected} images back, got {received}")
    return last - start


@dataclass
class EndToEnd:
    """Seconds through one gadget process per series name: the first series after start, then the warm median."""

    first: dict[str, float]
    warm: dict[str, float]
    cpu: dict[str, float]  # median CPU seconds the gadget process spent per series: what a busy machine can't inflate
    peak_memory_mb: float


def gadget_end_to_end(models_folder: Path, series_list: Sequence[Series], repeats: int, log_path: Path,
                      extra_env: dict[str, str | None] | None = None) -> EndToEnd:
    """Times each series through one gadget process: once cold, then (after a second warm-up) ``repeats`` times."""
    gadget = GadgetProcess(models_folder, log_path, extra_env)
    try:
        first, warm, cpu = {}, {}, {}
        for series in series_list:
            config = config_for(series.view)
            # the first pays for loading the model, oneDNN primitive creation and TorchScript's profiling runs
            first[series.name] = time_through_gadget(gadget.port, series, config)
            time_through_gadget(gadget.port, series, config)
            wall, spent = [], []
            for _ in range(repeats):
                before = gadget.cpu_seconds()
                wall.append(time_through_gadget(gadget.port, series, config))
                spent.append(gadget.cpu_seconds() - before)
            warm[series.name], cpu[series.name] = statistics.median(wall), statistics.median(spent)
            print(f"end to end {series.name} {extra_env or ''}: first {first[series.name] * 1000:.0f} ms, "
                  f"then {warm[series.name] * 1000:.0f} ms, {cpu[series.name] * 1000:.0f} ms CPU", flush=True)
        return EndToEnd(first, warm, cpu, gadget.peak_memory_mb())
    finally:
        gadget.stop()


def config_for(view: str) -> str:
    return (f'<configuration><property name="view" value="{view}"/>'
            '<property name="sequence" value="cine"/></configuration>')


# --- in-process timings -------------------------------------------------------------------------------------------


@dataclass
class Breakdown:
    """Median seconds per series of each step of Detector.detect's fast path (summed over the series' slices)."""

    detect: float
    preprocess: float
    model: float
    decode: float


def detector_calls(series: Series) -> list[tuple[np.ndarray, bool]]:
    """The (images, same_slice) of each ``Detector.detect`` call the gadget makes for ``series`` when all of it has
    arrived: a cine slice's phases in one call (``same_slice``), single-phase slices together in calls of up to
    ``gadget.MAX_SLICES_PER_CALL`` (``gadget.arrived_together``, ``gadget.detect_stack``). The images as stored: the
    gadget first turns a short-axis image to its model's display (``detector.detect_in_orientation``, one copy per
    image), which is not timed here."""
    if all(len(stack) == 1 for stack in series.slices):
        stack = np.concatenate(series.slices)
        return [(stack[start:start + MAX_SLICES_PER_CALL], False)
                for start in range(0, len(stack), MAX_SLICES_PER_CALL)]
    return [(stack, True) for stack in series.slices]


def detector_breakdown(detector: Detector, series: Series, repeats: int) -> Breakdown:
    """Times the steps of :meth:`Detector.detect` (fast path, called as the gadget calls it: :func:`detector_calls`)
    one by one: the fine stage with its mirror pass where the model averages one, the coarse-guided search window
    and the centre-of-mass decoding as the manifest sets them (not the second pass of a model with
    ``display_long_axis_deg``)."""
    calls = detector_calls(series)

    def detect_all() -> None:
        for images, same_slice in calls:
            detector.detect(images, series.spacing_mm, same_slice=same_slice)

    spec = detector.spec
    totals = {"preprocess": [], "model": [], "decode": []}
    for repeat in range(repeats + 2):
        spent = dict.fromkeys(totals, 0.0)
        for stack, same_slice in calls:
            tick = time.perf_counter()
            normalised = normalise_stack(stack)
            coarse_transform = grid_transform(stack.shape[1:], series.spacing_mm, spec.coarse_grid)
            coarse = resample_stack(normalised, [coarse_transform] * len(stack))
            tock = time.perf_counter()
            spent["preprocess"] += tock - tick
            probabilities = detector.run_stage("coarse", coarse)
            tick = time.perf_counter()
            spent["model"] += tick - tock
            points, coarse_peak = decode_heatmaps(probabilities)
            coarse_points = np.stack([coarse_transform.grid_to_image(p) for p in points])
            centres = crop_centres(coarse_points, coarse_peak)
            if same_slice:
                centres[:] = np.median(centres, axis=0)
            tock = time.perf_counter()
            spent["decode"] += tock - tick
            fine_transforms = [grid_transform(stack.shape[1:], series.spacing_mm, spec.fine_grid, tuple(centre))
                               for centre in centres]
            fine = resample_stack(normalised, fine_transforms)
            tick = time.perf_counter()
            spent["preprocess"] += tick - tock
            probabilities = detector.fine_probabilities(fine)  # and the mirrored crops' pass, where the model has one
            tock = time.perf_counter()
            spent["model"] += tock - tick
            if spec.fine_search_radius_mm is not None:
                probabilities = restrict_to_coarse_windows(probabilities, coarse_points, coarse_peak, fine_transforms,
                                                           spec.fine_search_radius_mm / spec.fine_grid.pixel_mm)
            radius_mm = spec.fine_centroid_radius_mm
            radius_px = None if radius_mm is None else radius_mm / spec.fine_grid.pixel_mm
            points, _ = decode_heatmaps(probabilities, radius_px)
            for image_points, transform in zip(points, fine_transforms, strict=True):
                transform.grid_to_image(image_points)
            spent["decode"] += time.perf_counter() - tock
        if repeat >= 2:  # the first two are warm-up
            for key, value in spent.items():
                totals[key].append(value)
    return Breakdown(median_seconds(detect_all, repeats), *(statistics.median(totals[k])
                                                            for k in ("preprocess", "model", "decode")))


def reference_seconds(series: Series, repeats: int) -> tuple[float, int]:
    """Median seconds per series of the reference pipeline: per-image preprocessing to 1 mm / 352 px, the
    residual U-Net in fp32 (NCHW, as the authors ran it), argmax decoding back to image pixels; the images batched
    as ours are (:func:`detector_calls`), in chunks of ``REFERENCE_CHUNK``."""
    torch.manual_seed(0)
    network = ReferenceResUNet().eval()
    grid = StageGrid(pixel_mm=REFERENCE_GRID_MM, size_px=REFERENCE_GRID_PX, sigma_px=2.0)

    def run() -> None:
        for stack, _ in detector_calls(series):  # batched as ours is, so the ratio compares like with like
            inputs, transforms = zip(*(preprocess(image, series.spacing_mm, grid) for image in stack), strict=True)
            batch = torch.from_numpy(np.stack(inputs)[:, None])
            with torch.inference_mode():
                points = torch.cat([argmax_points(network(chunk)) for chunk in batch.split(REFERENCE_CHUNK)])
            for grid_points, transform in zip(points.numpy(), transforms, strict=True):
                transform.grid_to_image(grid_points)

    # no warm-up run: one costs as much as a measured one, and first-call overheads are small against it
    return median_seconds(run, repeats, warmup=0), count_parameters(network)


# --- options tried ----------------------------------------------------------------------------------------------


def options_table(detector: Detector, series: Series, repeats: int, models_folder: Path,
                  log_path: Path) -> list[tuple[str, float]]:
    """Milliseconds per series (one slice of many phases) of each option, measured in isolation."""
    stack, spacing, spec = series.slices[0], series.spacing_mm, detector.spec
    rows: list[tuple[str, float]] = []
    for label, env in (
        ("gadget end to end, 2 threads, OMP_WAIT_POLICY=PASSIVE (kept: the gadget sets it)", {}),
        ("gadget end to end, 2 threads, libgomp's default waits (spin 300000 turns: GOMP_SPINCOUNT=300000)",
         {"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "300000"}),
        ("gadget end to end, 1 thread (OMP_NUM_THREADS=1), passive", {"OMP_NUM_THREADS": "1"}),
    ):
        result = gadget_end_to_end(models_folder, [series], repeats, log_path, env)
        rows.append((label, result.warm[series.name]))
        rows.append((f"{label}: CPU time", result.cpu[series.name]))
    centre = ((stack.shape[1] - 1) / 2, (stack.shape[2] - 1) / 2)

    def per_image() -> None:
        for image in stack:
            preprocess(image, spacing, spec.coarse_grid)
            preprocess(image, spacing, spec.fine_grid, centre_rc=centre)

    def whole_stack() -> None:
        normalised = normalise_stack(stack)
        resample_stack(normalised, [grid_transform(stack.shape[1:], spacing, spec.coarse_grid)] * len(stack))
        resample_stack(normalised, [grid_transform(stack.shape[1:], spacing, spec.fine_grid, centre)] * len(stack))

    rows.append(("preprocessing, both stages: `preprocess()` per image and stage (scipy; before)",
                 median_seconds(per_image, repeats)))
    rows.append(("preprocessing, both stages: normalise once + `resample_stack` (separable GEMMs; kept)",
                 median_seconds(whole_stack, repeats)))
    n = len(stack)
    inputs = {"coarse": torch.rand(n, 1, spec.coarse_grid.size_px, spec.coarse_grid.size_px),
              "fine": torch.rand(n, 1, spec.fine_grid.size_px, spec.fine_grid.size_px)}
    # the same weights frozen NCHW, as the model files were before 2026-12-05 (export.freeze_cascade)
    nchw_module = freeze_cascade(folded_cascade(spec.file), memory_format=torch.contiguous_format)
    optimised_module = torch.jit.optimize_for_inference(detector.model,
                                                        other_methods=["coarse_probabilities", "fine_probabilities"])
    for label, module, bf16 in (
        ("fp32, weights frozen NCHW (unoptimised; the files before 2026-12-05)", nchw_module, False),
        ("fp32, weights frozen channels-last", detector.model, False),
        ("bf16 autocast, weights frozen NCHW", nchw_module, True),
        ("bf16 autocast, weights frozen channels-last (kept)", detector.model, True),
        ("fp32, channels-last, `torch.jit.optimize_for_inference`", optimised_module, False),
        ("bf16 autocast, channels-last, `torch.jit.optimize_for_inference`", optimised_module, True),
    ):
        def both_stages(module=module, bf16=bf16) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                module.coarse_probabilities(inputs["coarse"])
                module.fine_probabilities(inputs["fine"])

        rows.append((f"model, both stages: {label}", median_seconds(both_stages, repeats, warmup=3)))
    threads = torch.get_num_threads()
    for count in sorted({1, 2, threads}):
        torch.set_num_threads(count)
        rows.append((f"whole `detect` (fast path), torch threads = {count}",
                     median_seconds(lambda: detector.detect(stack, spacing, same_slice=True), repeats)))
    torch.set_num_threads(threads)
    return [(label, seconds * 1000) for label, seconds in rows]


# --- accuracy of the fast path --------------------------------------------------------------------------------------


def fast_path_accuracy(view: str, source: Path | None, limit: int | None) -> dict | str:
    """Fast vs unoptimised path of the trained cine model on its validation slices (or why it cannot be measured).

    Distances between the two paths' points over every (slice, landmark), over the labelled ones, and over those
    the unoptimised path reports found (the only ones the gadget outputs); each path's mean error vs the labels.
    The fast path in fp32 is compared too, which separates the preprocessing changes from bf16."""
    from cmr_landmark.config import data_root
    from cmr_landmark.evaluation import predict
    from cmr_landmark.training import load_labelled_slices

    spec = trained_spec(view, source)
    if spec is None:
        return "no trained model"
    if not (data_root() / "README.md").exists():
        return f"no public data at {data_root()} (set CMR_LANDMARK_DATA)"
    slices = load_labelled_slices(list(ACCURACY_DATASETS[view]), "val", view, "cine")[:limit]
    reference, reference_probability = predict(Detector(spec, optimised=False), slices)
    fast_fp32, _ = predict(Detector(spec, use_bf16=False), slices)
    fast, fast_probability = predict(Detector(spec), slices)
    spacing = np.array([s.pixel_spacing_mm for s in slices])[:, None, :]
    truth = np.stack([s.landmarks_rc for s in slices])
    labelled = np.all(np.isfinite(truth), axis=2)
    found = reference_probability >= spec.probability_threshold

    def distance(points: np.ndarray, to: np.ndarray) -> np.ndarray:
        return distances_mm(points, to, spacing)

    between = distance(fast, reference)
    return {"model": spec.name, "datasets": ", ".join(ACCURACY_DATASETS[view]), "slices": len(slices),
            "fp32_between_max_mm": float(distance(fast_fp32, reference).max()),
            "between_found_mean_mm": float(between[found].mean()), "between_found_max_mm": float(between[found].max()),
            "between_labelled_mean_mm": float(between[labelled].mean()), "between_all_mean_mm": float(between.mean()),
            "between_all_max_mm": float(between.max()),
            "same_found": float(np.mean(found == (fast_probability >= spec.probability_threshold))),
            "error_reference_mm": float(distance(reference, truth)[labelled].mean()),
            "error_fast_mm": float(distance(fast, truth)[labelled].mean())}


# --- report -------------------------------------------------------------------------------------------------------


def machine_lines() -> list[str]:
    model = platform.processor() or "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    python_processes = sum(1 for status in Path("/proc").glob("[0-9]*/comm")
                           if _read_text(status).startswith("python"))
    load = os.getloadavg()
    bf16 = bf16_faster_on_cpu()
    return [f"CPU: {model}, {os.cpu_count()} cores; torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"bf16 autocast: {'yes' if bf16 else 'no'} (detector.bf16_faster_on_cpu); numpy {np.__version__}; "
            f"Python {platform.python_version()}",
            f"load average at the start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min), "
            f"{python_processes} python processes running"]


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def markdown(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_out(path: Path, text: str) -> None:
    block = f"{RESULTS_START}\n{text}\n{RESULTS_END}"
    if path.exists() and RESULTS_START in (current := path.read_text()) and RESULTS_END in current:
        before, rest = current.split(RESULTS_START, 1)
        path.write_text(before + block + rest.split(RESULTS_END, 1)[1])
    else:
        path.write_text(block + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no options table, 300 accuracy slices")
    parser.add_argument("--out", type=Path, help="markdown file to write the results into")
    parser.add_argument("--repeats", type=int, default=None, help="runs per median (default 10, quick 3)")
    parser.add_argument("--models", type=Path, default=None, help="model folder (default: the repository's)")
    parser.add_argument("--random-models", action="store_true",
                        help="time random cascades of the default architecture even where models/ has trained ones")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference network (slow)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the fast-path accuracy check")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 10)
    machine = machine_lines()
    print("\n".join(machine), flush=True)
    series_list = [lax_cine_series(), sax_stack_series()]
    sections = ["Machine: " + "; ".join(machine), ""]
    with tempfile.TemporaryDirectory(prefix="cmr_landmark_bench_") as tmp:
        folder = Path(tmp) / "models"
        folder.mkdir()
        described = prepare_models(folder, args.models, args.random_models)
        sections.append("Models: " + ", ".join(f"{view} {text}" for view, text in described.items()) + ".")
        print(sections[-1], flush=True)

        end_to_end = gadget_end_to_end(folder, series_list, repeats, Path(tmp) / "gadget.log")
        rows, details = [], []
        for series in series_list:
            detector = Detector(find_model(series.view, "cine", folder=folder))
            parts = detector_breakdown(detector, series, repeats)
            reference = reference_seconds(series, 1 if args.quick else 3) if not args.no_reference else None
            rows.append([series.name, f"{end_to_end.warm[series.name] * 1000:.0f}",
                         f"{end_to_end.cpu[series.name] * 1000:.0f}",
                         f"{end_to_end.first[series.name] * 1000:.0f}", f"{parts.detect * 1000:.0f}",
                         f"{parts.detect / series.n_images * 1000:.1f}", f"{parts.preprocess * 1000:.1f}",
                         f"{parts.model * 1000:.1f}", f"{parts.model / series.n_images * 1000:.2f}",
                         f"{parts.decode * 1000:.1f}",
                         f"{reference[0] * 1000:.0f}" if reference else "-",
                         f"{reference[0] / parts.detect:.0f}x" if reference else "-"])
            if reference:
                details.append(f"reference network: {reference[1] / 1e6:.2f} M parameters")
            print(rows[-1], flush=True)
            if series is series_list[0] and not args.quick:
                options = options_table(detector, series, repeats, folder, Path(tmp) / "gadget_options.log")
        reference_runs = "" if args.no_reference else f" (reference network: {1 if args.quick else 3})"
        sections += ["", f"Medians of {repeats} runs{reference_runs}; "
                     f"peak resident memory of the gadget process (VmHWM): {end_to_end.peak_memory_mb:.0f} MB. "
                     + ("; ".join(sorted(set(details))) + "." if details else ""), "",
                     markdown(rows, ["series", "end to end through the gadget (ms)",
                                     "gadget process CPU time per series (ms)",
                                     "first series after the gadget started (ms)", "detector per series (ms)",
                                     "detector per image (ms)", "preprocessing (ms)", "model (ms)",
                                     "model per image (ms)", "decoding (ms)", "reference network per series (ms)",
                                     "reference / ours (detector)"])]
        if not args.quick:
            sections += ["", f"Options, {series_list[0].name}, one at a time (ms per series):", "",
                         markdown([(label, f"{ms:.1f}") for label, ms in options], ["option", "ms"])]
        if not args.no_accuracy:
            accuracy_rows = []
            for view in ("sax", "lax"):
                result = fast_path_accuracy(view, args.models, 300 if args.quick else None)
                if isinstance(result, str):
                    accuracy_rows.append([view, result] + [""] * 6)
                    continue
                accuracy_rows.append([
                    view, f"`{result['model']}`, "
                    + ("M&Ms-2 001 ED/ES (its training frames)" if view == "lax" else f"{result['datasets']} val")
                    + f", {result['slices']} slices",
                    f"{result['fp32_between_max_mm']:.3f}",
                    f"{result['between_found_mean_mm']:.3f} (max {result['between_found_max_mm']:.2f})",
                    f"{result['between_labelled_mean_mm']:.3f}",
                    f"{result['between_all_mean_mm']:.3f} (max {result['between_all_max_mm']:.1f})",
                    f"{100 * result['same_found']:.1f} %",
                    f"{result['error_reference_mm']:.3f} -> {result['error_fast_mm']:.3f} "
                    f"({result['error_fast_mm'] - result['error_reference_mm']:+.3f})"])
                print(accuracy_rows[-1], flush=True)
            sections += ["", "Fast path against the unoptimised path (fp32, `preprocess()` per image and stage), "
                         "distances between their points in mm:", "",
                         markdown(accuracy_rows, ["view", "model, slices", "fast path in fp32: max",
                                                  "fast path: found landmarks, mean", "labelled, mean",
                                                  "all, mean", "same found / absent",
                                                  "mean error vs labels, unoptimised -> fast"])]
    load = os.getloadavg()
    sections.append(f"\nLoad average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.")
    text = "\n".join(sections)
    print("\n" + text)
    if args.out:
        write_out(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
