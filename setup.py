"""Inline cardiac-MRI landmark detection for Gadgetron (cmr-landmark)."""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="cmr-landmark",
    version="0.1.0",
    description="Inline cardiac MR landmark detection (RV insertion, LV centre, mitral valve, apex) "
    "as a Gadgetron Python gadget, with offline detection, training and evaluation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["cmr_landmark", "cmr_landmark.*", "gadgets", "gadgets.*"]),
    package_data={"cmr_landmark": ["py.typed"]},
    # Models, chains and the sample live at the top level of the repository (the layout the users asked for);
    # they are installed as data files under share/cmr-landmark so an installed package finds them too.
    data_files=[
        ("share/cmr-landmark/models", sorted(glob("models/*.json") + glob("models/*.pt") + glob("models/*.md"))),
        ("share/cmr-landmark/xml_configs", sorted(glob("xml_configs/*.xml"))),
        ("share/cmr-landmark/samples", sorted(glob("samples/*"))),
    ],
    install_requires=[
        "torch==2.13.0",
        "numpy>=1.26",
        "scipy>=1.11",
        "gadgetron==1.4.1",
        "ismrmrd>=1.15",  # ConfigText in ismrmrd.serialization (the replay tool), row-major Image.from_array
        "h5py>=3.9",
        "nibabel>=5.0",
        "pydicom>=3.0",  # pydicom.pixels.apply_modality_lut
        "matplotlib>=3.8",
        "multimethod",
        "tqdm",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6", "ruff>=0.5"],
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
        # decoders for compressed DICOM as PACS export it (JPEG, JPEG lossless, JPEG-LS, JPEG 2000); optional:
        # pylibjpeg-libjpeg is GPLv3, the rest MIT
        "dicom": ["pylibjpeg>=2", "pylibjpeg-libjpeg>=2.1", "pylibjpeg-openjpeg>=2"],
    },
    entry_points={"console_scripts": ["cmr-landmark=cmr_landmark.cli:main"]},
)
