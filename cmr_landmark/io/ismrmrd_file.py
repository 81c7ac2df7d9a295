"""ISMRMRD .h5 files: read images (or raw Cartesian acquisitions, reconstructed by :mod:`.recon`) and write
images, through ismrmrd.File / ismrmrd.Dataset.

An image's data is ``(channels, z, y, x)``: the first channel of the first z plane is the 2-D image, rows = y
(along phase_dir), columns = x (along read_dir).
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import h5py
import ismrmrd
import ismrmrd.xsd
import numpy as np

from ..geometry import GeometryError, pixel_spacing_mm
from ..output_paths import written_beside
from .image_series import ImageReadError, ImageSeries, SliceGeometry
from .recon import reconstruct_slices

DATASET_NAME = "dataset"
# Acquisitions per HDF5 read or write of a block: 1024 32-coil readouts are about 130 MB, never the whole file.
ACQUISITIONS_PER_BLOCK = 1024


def _open(path: Path) -> ismrmrd.File:
    try:
        return ismrmrd.File(str(path), "r")
    except (OSError, ValueError) as error:
        raise ImageReadError(f"{path}: not a readable ISMRMRD/HDF5 file ({_open_failure(path, error)})") from error


def _open_failure(path: Path, error: Exception) -> str:
    """HDF5's reason why ``path`` does not open. ismrmrd.File opens with the stdio driver, which says "unable to
    open file" for an empty, a truncated and a non-HDF5 file alike; the default driver says which ("file signature
    not found", "truncated file: eof = ...")."""
    try:
        with h5py.File(path, "r"):
            return str(error)
    except (OSError, ValueError) as reason:
        return str(reason)


def list_image_groups(path: Path) -> list[str]:
    """Paths ("dataset/image_1", ...) of every image group in the file, sorted."""
    with _open(path) as file:
        try:
            return sorted(f"{name}/{group}" for name in file for group in file[name].find_images())
        except OSError as error:  # damaged HDF5 metadata
            raise ImageReadError(f"{path}: its groups cannot be listed, the file is damaged ({error})") from error


def _header(container: ismrmrd.file.Container, path: Path) -> ismrmrd.xsd.ismrmrdHeader | None:
    if not container.has_header():
        return None
    try:
        return container.header
    except Exception as error:  # the xsd parser raises its own parse/validation error types
        raise ImageReadError(f"{path}: the ISMRMRD XML header does not parse ({error})") from error


def _images_read_one_by_one(
    read_image: Callable[[int], ismrmrd.Image], count: int, path: Path, group_path: str
) -> list[ismrmrd.Image]:
    """Images 0 to ``count`` - 1 of the group ``group_path``, each read by ``read_image(index)``, which parses its
    meta attributes: an image that cannot be read or parsed, or a group without images, is an ImageReadError that
    says which, not an HDF5 or XML traceback (or, for an empty group, a gadget started for nothing)."""
    if count == 0:
        raise ImageReadError(f"{path}: {group_path} holds no images")
    images = []
    for index in range(count):
        try:
            images.append(read_image(index))
        except OSError as error:  # a damaged compressed chunk: "filter returned failure during read"
            raise ImageReadError(f"{path}: {group_path} image {index} cannot be read, the file is damaged "
                                 f"({error})") from error
        except (ElementTree.ParseError, UnicodeDecodeError) as error:
            raise ImageReadError(f"{path}: {group_path} image {index}: its meta attributes are not valid ISMRMRD "
                                 f"meta XML ({error})") from error
    return images


def _complex_images(path: Path, group_path: str) -> list[ismrmrd.Image]:
    """The images of a group whose complex pixels ismrmrd.File cannot cast: stored as the standard (real, imag)
    compound type, which the C++ library, Gadgetron and ismrmrd.Dataset write. ismrmrd.Dataset reads them."""
    dataset_name, group = group_path.split("/", 1)
    dataset = ismrmrd.Dataset(str(path), dataset_name, create_if_needed=False)
    try:
        return _images_read_one_by_one(lambda index: dataset.read_image(group, index),
                                       dataset.number_of_images(group), path, group_path)
    finally:
        dataset.close()


def read_ismrmrd_images(
    path: Path, image_group: str | None = None
) -> tuple[ismrmrd.xsd.ismrmrdHeader | None, list[ismrmrd.Image]]:
    """The XML header and images of an ISMRMRD file.

    ``image_group`` ("dataset/image_1") picks one group; by default the file must hold exactly one image group,
    or no images and raw acquisitions, which are reconstructed (:func:`.recon.reconstruct_slices`) as they are
    read, one slice's at a time (:func:`acquisitions_by_slice`). A file that does not open, a damaged one, an
    image whose meta attributes are not XML and an image group without images are ImageReadErrors that name them.
    """
    path = Path(path)
    groups = list_image_groups(path)
    if image_group is None and len(groups) > 1:
        raise ImageReadError(f"{path}: holds several image groups {groups}; pick one with --image-group")
    if image_group is not None and image_group not in groups:
        raise ImageReadError(f"{path}: no image group {image_group!r} (have {groups})")
    with _open(path) as file:
        if groups:
            group_path = image_group or groups[0]
            dataset_name, group = group_path.split("/", 1)
            container = file[dataset_name]
            header = _header(container, path)
            images = container[group].images
            try:
                return header, _images_read_one_by_one(images.__getitem__, len(images), path, group_path)
            except TypeError:
                pass  # complex pixels: read once this handle is closed (HDF5 locks the file against a second one)
        else:
            for dataset_name in file:
                container = file[dataset_name]
                if container.has_acquisitions():
                    header = _header(container, path)
                    if header is None:
                        raise ImageReadError(f"{path}: raw acquisitions without an XML header cannot be "
                                             "reconstructed")
                    try:
                        return header, reconstruct_slices(header, acquisitions_by_slice(container))
                    except ImageReadError as error:  # say which file's raw data, as the other read errors do
                        raise ImageReadError(f"{path}: raw data: {error}") from error
            raise ImageReadError(f"{path}: holds neither ISMRMRD images nor acquisitions")
    return header, _complex_images(path, group_path)


def acquisitions_by_slice(
    container: ismrmrd.file.Container,
) -> Iterator[tuple[int, list[ismrmrd.Acquisition]]]:
    """(slice index, that slice's acquisitions in file order) by increasing index, from a container that holds
    acquisitions, each slice's read from the file only when asked for: the headers say where each slice's
    acquisitions are, so a multi-gigabyte multi-coil file never has to be in memory at once."""
    rows = container.acquisitions.data  # the HDF5 dataset of ISMRMRD's acquisition records
    # HDF5 reads a record's readout with its header whatever fields are asked for: read the headers a block at a
    # time, keeping a copy of the slice index only, so that each block's readouts are freed before the next
    try:
        slice_of_row = np.concatenate([np.empty(0, dtype=np.uint16)] + [
            rows[start:start + ACQUISITIONS_PER_BLOCK]["head"]["idx"]["slice"].copy()
            for start in range(0, len(rows), ACQUISITIONS_PER_BLOCK)])
    except OSError as error:  # a damaged chunk
        raise ImageReadError(f"the acquisition headers cannot be read, the file is damaged ({error})") from error
    for slice_index in np.unique(slice_of_row):
        # one read of the slice's rows, wherever they lie (interleaved slices: every other row); the acquisitions'
        # readouts are views of what it read, not copies
        try:
            slice_rows = rows[np.flatnonzero(slice_of_row == slice_index)]
        except OSError as error:
            raise ImageReadError(f"slice {slice_index}: the acquisitions cannot be read, the file is damaged "
                                 f"({error})") from error
        yield int(slice_index), [ismrmrd.file.Acquisitions.from_numpy(row) for row in slice_rows]


def images_to_series(images: Sequence[ismrmrd.Image], source: str) -> ImageSeries:
    """Stack ISMRMRD images by (slice, phase) into an :class:`ImageSeries` (LPS, voxel order col_row)."""
    if not images:
        raise ImageReadError(f"{source}: no images")
    by_index: dict[tuple[int, int], ismrmrd.Image] = {}
    for image in images:
        key = (int(image.slice), int(image.phase))
        if key in by_index:
            raise ImageReadError(
                f"{source}: several images for slice {key[0]} phase {key[1]} (they differ in contrast, repetition, "
                "set or series); write one series per file"
            )
        by_index[key] = image
    slices = sorted({s for s, _ in by_index})
    phases = sorted({p for _, p in by_index})
    missing = [(s, p) for s in slices for p in phases if (s, p) not in by_index]
    if missing:
        raise ImageReadError(f"{source}: images missing for (slice, phase) {missing[:5]}")
    shapes = {image.data.shape[2:] for image in images}
    if len(shapes) != 1:
        raise ImageReadError(f"{source}: images have different sizes {sorted(shapes)}")
    stack = np.stack([np.stack([by_index[s, p].data[0, 0] for p in phases]) for s in slices])
    geometries, spacing, thickness = [], None, 0.0
    for s in slices:
        image = by_index[s, phases[0]]
        try:
            geometries.append(
                SliceGeometry.from_ismrmrd(
                    image.position, image.read_dir, image.phase_dir, image.field_of_view, image.matrix_size
                )
            )
            slice_spacing = pixel_spacing_mm(image.field_of_view, image.matrix_size)
        except GeometryError as error:
            raise ImageReadError(f"{source}: slice {s}: {error}") from error
        if spacing is not None and not np.allclose(slice_spacing, spacing, rtol=1e-3):
            raise ImageReadError(f"{source}: slice {s}: pixel spacing {slice_spacing} differs from {spacing} of the "
                                 "first slice")
        spacing = spacing or slice_spacing
        thickness = float(image.field_of_view[2])
    return ImageSeries(
        images=stack,
        pixel_spacing_mm=spacing,
        slice_geometry=tuple(geometries),
        frame="LPS",
        voxel_order="col_row",
        source=source,
        slice_thickness_mm=thickness,
    )


def read_ismrmrd(path: Path, image_group: str | None = None) -> ImageSeries:
    """Read an ISMRMRD .h5 (images, or raw acquisitions reconstructed) into an :class:`ImageSeries`."""
    _, images = read_ismrmrd_images(path, image_group)
    return images_to_series(images, str(path))


def write_ismrmrd_images(
    path: Path,
    header: ismrmrd.xsd.ismrmrdHeader | None,
    images_by_group: dict[str, Iterable[ismrmrd.Image]],
    compress: bool = False,
) -> None:
    """Write (replace) ``path`` with the XML header and image groups ({"image_1": [...], ...}) in "dataset".
    Written beside and renamed (:func:`written_beside`): a failed write leaves an earlier ``path`` as it was.

    The images of a group share one data type and array shape (ValueError otherwise): a group is one HDF5 array,
    into which ismrmrd.Dataset would cast every image to the first one's type without a word.

    ``compress`` stores the pixel data gzipped (transparent to every HDF5 reader): ismrmrd.Dataset cannot create
    compressed datasets itself, so the group's datasets are created empty beforehand, exactly as
    ``append_image`` would create them but with the filter, and ``append_image`` then grows them.
    """
    path = Path(path)
    # a group as list_image_groups names it ("dataset/image_1") is the same group as "image_1"
    groups = {group.removeprefix(f"{DATASET_NAME}/"): list(images) for group, images in images_by_group.items()}
    for group, images in groups.items():
        if not group or "/" in group:
            raise ValueError(f"image group {group!r}: a name like image_1 (or dataset/image_1), one level in "
                             f"'{DATASET_NAME}'")
        kinds = sorted({f"{image.data.dtype} {image.data.shape}" for image in images})
        if len(kinds) > 1:
            raise ValueError(f"image group {group} mixes data types or shapes ({', '.join(kinds)}): one group "
                             "holds one data type and shape, write the others in groups of their own")
    path.parent.mkdir(parents=True, exist_ok=True)
    with written_beside(path) as partial:
        with h5py.File(partial, "w") as file:
            parent = file.create_group(DATASET_NAME)
            for group, images in groups.items():
                if compress and images:
                    _create_compressed_image_group(parent, group, images[0])
        with ismrmrd.Dataset(str(partial), DATASET_NAME, mode="r+") as dataset:
            if header is not None:
                dataset.write_xml_header(ismrmrd.xsd.ToXML(header))
            for group, images in groups.items():
                for image in images:
                    dataset.append_image(group, image)
        # python ismrmrd stores each header as its image was built (attribute_string_len often 0) beside the
        # attribute string; the format's readers size that string by the header, in bytes. Set in the file, not on
        # the caller's images (setHead would also copy their pixels).
        with h5py.File(partial, "r+") as file:
            for group in groups:
                node = file[DATASET_NAME].get(group)
                if node is None or not node["header"].shape[0]:  # a group without images
                    continue
                headers = node["header"][:]
                headers["attribute_string_len"] = [len(text if isinstance(text, bytes) else text.encode())
                                                   for text in node["attributes"][:]]
                node["header"][:] = headers


def _create_compressed_image_group(parent: h5py.Group, group: str, first: ismrmrd.Image) -> None:
    node = parent.require_group(group)
    node.create_dataset("header", (0,), maxshape=(None,), dtype=ismrmrd.hdf5.image_header_dtype)
    node.create_dataset("attributes", (0,), maxshape=(None,), dtype=h5py.special_dtype(vlen=str))
    shape = first.data.shape
    node.create_dataset(
        "data", (0, *shape), maxshape=(None, *shape), chunks=(1, *shape), compression="gzip", compression_opts=9,
        shuffle=True, dtype=ismrmrd.hdf5.get_hdf5type(first.data_type),
    )


def write_ismrmrd_acquisitions(
    path: Path, header: ismrmrd.xsd.ismrmrdHeader, acquisitions: Iterable[ismrmrd.Acquisition]
) -> None:
    """Write (replace) ``path`` with the XML header and raw acquisitions in "dataset", a batch at a time, so that
    ``acquisitions`` can be a generator that never holds them all. Written beside and renamed: while a generator
    makes them (a simulated 32-coil cine: half a minute), an error or an interrupt leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    acquisitions = iter(acquisitions)
    with written_beside(path) as partial:
        with ismrmrd.File(str(partial), "w") as file:
            container = file[DATASET_NAME]
            container.header = header
            container.acquisitions = list(islice(acquisitions, ACQUISITIONS_PER_BLOCK))  # creates the dataset
            while batch := list(islice(acquisitions, ACQUISITIONS_PER_BLOCK)):
                container.acquisitions.extend(batch)
