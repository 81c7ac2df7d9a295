"""Readers: NIfTI and DICOM files written here with nibabel/pydicom, and the public files when present."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from cmr_landmark.io import ImageReadError, list_image_groups, read_dicom, read_nifti, read_series, write_ismrmrd_images


def oblique_affine(spacing=(1.4, 1.6, 8.0), origin=(-40.0, 25.0, 60.0), angle=0.4) -> np.ndarray:
    """A rotated, anisotropic voxel-to-world affine like a scanner's double-oblique plane."""
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0], [s * 0.8, c * 0.8, -0.6], [s * 0.6, c * 0.6, 0.8]])
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def write_nifti(path, data, affine):
    import nibabel as nib

    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def test_nifti_4d_is_slices_by_phases_with_affine_world(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 3000, size=(20, 24, 3, 2)).astype(np.int16)
    affine = oblique_affine()
    series = read_nifti(write_nifti(tmp_path / "cine.nii.gz", data, affine))
    assert series.images.shape == (3, 2, 20, 24) and series.images.dtype == np.int16
    for k in range(3):
        for t in range(2):
            np.testing.assert_array_equal(series.images[k, t], data[:, :, k, t])
    np.testing.assert_allclose(series.pixel_spacing_mm, (1.4, 1.6))
    assert series.frame == "RAS" and series.voxel_order == "row_col"
    points = rng.uniform(0, 20, size=(5, 2))
    for k in range(3):
        expected = (affine @ np.c_[points, np.full(5, k), np.ones(5)].T).T[:, :3]
        np.testing.assert_allclose(series.pixel_to_world_mm(k, points), expected, atol=1e-6)
    assert series.voxel(3.0, 7.0) == [3.0, 7.0]


def test_nifti_2d_and_3d_shapes(tmp_path):
    image = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    assert read_nifti(write_nifti(tmp_path / "a.nii", image, np.eye(4))).images.shape == (1, 1, 30, 40)
    stack = np.zeros((30, 40, 5), dtype=np.float32)
    assert read_nifti(write_nifti(tmp_path / "b.nii", stack, np.eye(4))).images.shape == (5, 1, 30, 40)


def write_dicom(path, pixels, position, orientation, spacing, trigger_ms, instance, series_uid, thickness=8.0):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.SeriesInstanceUID = series_uid
    dataset.Modality = "MR"
    dataset.ImagePositionPatient = [float(v) for v in position]
    dataset.ImageOrientationPatient = [float(v) for v in orientation]
    dataset.PixelSpacing = [float(v) for v in spacing]
    dataset.SliceThickness = thickness
    dataset.TriggerTime = trigger_ms
    dataset.InstanceNumber = instance
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.save_as(str(path), enforce_file_format=True)


# Rows run along the second cosine, columns along the first (DICOM's definition); spacing is (row gap, column gap).
ORIENTATION = np.array([0.8, 0.6, 0.0, 0.0, 0.0, -1.0])
SPACING = (1.5, 1.25)


def dicom_series(folder, slices=2, phases=3, shape=(12, 16), texture=None):
    """Files written in a scrambled order; pixel value 100 * slice + phase tells where each belongs (plus
    ``texture``, an image of ``shape``, where one is given: the detector refuses images without signal)."""
    uid = generate_uid()
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    order = np.random.default_rng(0).permutation(slices * phases)
    for n, index in enumerate(order):
        k, t = divmod(int(index), phases)
        position = np.array([10.0, -20.0, 30.0]) + 8.0 * k * normal
        pixels = np.full(shape, 100 * k + t, dtype=np.uint16) + (0 if texture is None else texture)
        write_dicom(folder / f"IM{n:03d}.dcm", pixels, position, ORIENTATION, SPACING, 40.0 * t, 50 - n, uid)
    return uid


def test_dicom_folder_groups_slices_sorts_phases_and_keeps_geometry(tmp_path):
    dicom_series(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    series = read_series(tmp_path)
    assert series.images.shape == (2, 3, 12, 16)
    for k in range(2):
        for t in range(3):
            assert np.all(series.images[k, t] == 100 * k + t)
    assert series.frame == "LPS" and series.voxel_order == "col_row"
    assert series.pixel_spacing_mm == SPACING
    np.testing.assert_allclose(series.trigger_times_ms, [[0, 40, 80], [0, 40, 80]])
    row, col = 5.0, 7.0
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    expected = np.array([10.0, -20.0, 30.0]) + 8.0 * normal
    expected += col * SPACING[1] * ORIENTATION[:3] + row * SPACING[0] * ORIENTATION[3:]
    np.testing.assert_allclose(series.pixel_to_world_mm(1, [[row, col]])[0], expected)
    assert series.voxel(row, col) == [col, row]


def test_dicom_errors_are_clear(tmp_path):
    with pytest.raises(ImageReadError, match="no DICOM images"):
        read_dicom(tmp_path)
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n not an MR image")
    with pytest.raises(ImageReadError, match=r"not a DICOM image, and not NIfTI \(.nii, .nii.gz\) or ISMRMRD"):
        read_series(picture)
    two_series = tmp_path / "two_series"
    two_series.mkdir()
    dicom_series(two_series, slices=1, phases=2)
    (two_series / "second").mkdir()
    dicom_series(two_series / "second", slices=1, phases=1)
    with pytest.raises(ImageReadError, match="2 DICOM series"):
        read_dicom(two_series)
    uneven = tmp_path / "uneven"
    uneven.mkdir()
    uid, normal = generate_uid(), np.cross(ORIENTATION[:3], ORIENTATION[3:])
    for n, (k, t) in enumerate([(0, 0), (0, 1), (1, 0)]):
        write_dicom(uneven / f"IM{n}.dcm", np.zeros((8, 8)), 8.0 * k * normal, ORIENTATION, SPACING, 40.0 * t, n, uid)
    with pytest.raises(ImageReadError, match="different numbers of phases"):
        read_dicom(uneven)
    # anonymised files of two planes (no series UID): refused, not stacked into one series
    planes = tmp_path / "planes"
    planes.mkdir()
    other = np.array([0.0, 1.0, 0.0, 0.0, 0.0, -1.0])  # a coronal plane beside the oblique one
    for n, orientation in enumerate((ORIENTATION, other)):
        write_dicom(planes / f"IM{n}.dcm", np.zeros((8, 8)), np.zeros(3), orientation, SPACING, 0.0, n, "")
    with pytest.raises(ImageReadError, match="not parallel"):
        read_dicom(planes)
    skewed = tmp_path / "skewed"
    skewed.mkdir()
    write_dicom(skewed / "IM0.dcm", np.zeros((8, 8)), np.zeros(3), np.array([1.0, 0, 0, 0.6, 0.8, 0]), SPACING,
                0.0, 0, generate_uid())
    with pytest.raises(ImageReadError, match="ImageOrientationPatient"):
        read_dicom(skewed)


def test_unreadable_inputs_raise_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_series(tmp_path / "missing.nii.gz")
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(b"definitely not gzip")
    with pytest.raises(ImageReadError, match="not a readable NIfTI"):
        read_series(fake)
    fake_h5 = tmp_path / "fake.h5"
    fake_h5.write_bytes(b"not hdf5 either")
    with pytest.raises(ImageReadError, match="not a readable ISMRMRD"):
        read_series(fake_h5)
    good = write_nifti(tmp_path / "good.nii.gz", np.random.default_rng(0).random((64, 64, 4), dtype=np.float32),
                       np.eye(4)).read_bytes()
    corrupt = tmp_path / "corrupt.nii.gz"  # a gzip whose header reads but whose body does not inflate
    corrupt.write_bytes(good[:200] + b"\xff" * (len(good) - 400) + good[-200:])
    with pytest.raises(ImageReadError, match="not a readable NIfTI"):
        read_series(corrupt)
    tiny = write_nifti(tmp_path / "tiny.nii", np.zeros((1, 5, 2), dtype=np.float32), np.eye(4))
    with pytest.raises(ImageReadError, match="at least 2 x 2"):
        read_series(tiny)


def test_public_files_read(shared_data):
    import nibabel as nib

    path = shared_data / "mnms2" / "001" / "001_LA_CINE.nii.gz"
    cine, stored = read_series(path), nib.load(str(path))  # the file's own header says what must come out
    rows, cols, slices, phases = stored.shape
    assert cine.images.shape == (slices, phases, rows, cols)
    np.testing.assert_array_equal(cine.images[0, phases - 1], np.asarray(stored.dataobj[:, :, 0, phases - 1]))
    np.testing.assert_allclose(cine.pixel_spacing_mm, stored.header.get_zooms()[:2], rtol=1e-6)
    path = sorted((shared_data / "kaggle_dsb_dicom").glob("*.dcm"))[0]
    dataset = pydicom.dcmread(str(path))
    series = read_series(path)
    assert series.images.shape == (1, 1, dataset.Rows, dataset.Columns)
    first_pixel_mm = series.pixel_to_world_mm(0, [[0.0, 0.0]])[0]
    np.testing.assert_allclose(first_pixel_mm, np.asarray(dataset.ImagePositionPatient, dtype=float))


def test_ismrmrd_slices_that_differ_in_pixel_spacing_are_refused():
    from mrd_stream_helpers import sax_plane_image

    from cmr_landmark.io.ismrmrd_file import images_to_series

    pixels = np.ones((16, 16), np.float32)
    images = [sax_plane_image(pixels, slice_index=0), sax_plane_image(pixels, slice_index=1, image_index=2,
                                                                      field_of_view_mm=(320.0, 320.0))]
    with pytest.raises(ImageReadError, match="slice 1: pixel spacing"):
        images_to_series(images, "two_spacings.h5")


def test_complex_ismrmrd_images_as_the_c_library_writes_them_are_read(tmp_path):
    # ismrmrd.Dataset (as the C++ library and Gadgetron) stores complex pixels as a (real, imag) compound type, which
    # ismrmrd.File cannot cast: the reader must still give the images, and the series their magnitude
    import ismrmrd
    from mrd_stream_helpers import sax_plane_image

    rng = np.random.default_rng(3)
    pixels = (rng.normal(size=(2, 12, 16)) + 1j * rng.normal(size=(2, 12, 16))).astype(np.complex64)
    path = tmp_path / "complex.h5"
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    for phase, plane in enumerate(pixels):
        image = sax_plane_image(np.abs(plane).astype(np.float32), phase=phase, image_index=phase + 1)
        complex_image = ismrmrd.Image.from_array(plane[np.newaxis, np.newaxis])
        head = image.getHead()  # the plane's geometry and indices, with the complex pixel type
        head.data_type, head.image_type = complex_image.getHead().data_type, ismrmrd.IMTYPE_COMPLEX
        complex_image.setHead(head)
        complex_image.data[:] = plane[np.newaxis, np.newaxis]
        dataset.append_image("image_1", complex_image)
    dataset.close()
    series = read_series(path)
    assert series.images.shape == (1, 2, 12, 16)
    np.testing.assert_allclose(np.abs(series.images[0]), np.abs(pixels), rtol=1e-6)


@pytest.mark.parametrize(("unit", "mm_per_unit"), [("meter", 1000.0), ("micron", 0.001), ("mm", 1.0)])
def test_a_nifti_in_another_length_unit_is_read_in_mm(tmp_path, unit, mm_per_unit):
    import nibabel as nib

    affine_mm = oblique_affine()
    image = nib.Nifti1Image(np.ones((20, 24, 3), np.int16), np.vstack([affine_mm[:3] / mm_per_unit, [0, 0, 0, 1]]))
    image.header.set_xyzt_units(xyz=unit)
    path = tmp_path / f"{unit}.nii.gz"
    nib.save(image, str(path))
    series = read_nifti(path)
    np.testing.assert_allclose(series.pixel_spacing_mm, np.linalg.norm(affine_mm[:3, :2], axis=0))
    np.testing.assert_allclose(series.pixel_to_world_mm(2, [[4.0, 5.0]])[0], (affine_mm @ [4.0, 5.0, 2.0, 1.0])[:3],
                               atol=1e-9)


def test_a_pixel_size_no_mr_image_has_is_refused(tmp_path):
    # 1e-9 mm pixels (a file in metres without its unit, or a broken affine) once made detect ask for 95 GiB
    path = write_nifti(tmp_path / "tiny.nii.gz", np.ones((20, 24, 3), np.float32), np.diag([1e-9, 1e-9, 1e-9, 1.0]))
    with pytest.raises(ImageReadError, match="not an MR image's"):
        read_nifti(path)


def test_an_image_group_is_named_as_the_readers_name_it(tmp_path):
    # list_image_groups says "dataset/image_1"; written back under that name it had become dataset/dataset/image_1
    import ismrmrd

    image = ismrmrd.Image.from_array(np.ones((1, 1, 4, 4), np.float32), transpose=False)
    write_ismrmrd_images(tmp_path / "a.h5", None, {"dataset/image_1": [image]})
    assert list_image_groups(tmp_path / "a.h5") == ["dataset/image_1"]
    with pytest.raises(ValueError, match="one level"):
        write_ismrmrd_images(tmp_path / "b.h5", None, {"dataset/more/image_1": [image]})


@pytest.mark.parametrize("compress", [False, True])
def test_a_written_image_header_counts_its_attribute_string(tmp_path, compress):
    # python ismrmrd stores the header as the image was built (attribute_string_len 0) beside a longer attribute
    # string; a reader that sizes the string from the header would then read none of it
    import h5py
    import ismrmrd

    image = ismrmrd.Image.from_array(np.ones((1, 1, 4, 4), np.float32), transpose=False)
    image.meta = {"SequenceDescription": "SAX_MOLLI_T1MAP", "GADGETRON_DataRole": "T1", "Unit": "µs"}
    pixels = image.data
    write_ismrmrd_images(tmp_path / "a.h5", None, {"image_1": [image, image]}, compress=compress)
    with h5py.File(tmp_path / "a.h5", "r") as file:
        headers = file["dataset/image_1/header"][:]
        attributes = [text if isinstance(text, bytes) else text.encode() for text in file["dataset/image_1/attributes"]]
    assert [len(text) for text in attributes] == list(headers["attribute_string_len"])
    assert len(attributes[0]) > len(image.attribute_string)  # counted in bytes: "µ" is two
    # set in the file: the caller's image keeps its header and its pixel buffer
    assert image.getHead().attribute_string_len == 0 and np.shares_memory(image.data, pixels)
