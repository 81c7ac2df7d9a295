"""The Gadgetron entry point: ``python -m gadgetron PORT gadgets.cmr_landmark_gadget landmark_detection``.

A thin shell: everything happens in :mod:`cmr_landmark.gadget` (usable and tested on its own). Gadgetron starts
this target for ``<external><execute name="gadgets.cmr_landmark_gadget" target="landmark_detection"
type="python"/>...</external>``; the passive mode is ``cmr-landmark serve --port PORT``.
"""

from cmr_landmark.config import prefer_passive_openmp_waits

prefer_passive_openmp_waits()  # before cmr_landmark.gadget imports torch

from cmr_landmark.gadget import landmark_detection  # noqa: E402

__all__ = ["landmark_detection"]
