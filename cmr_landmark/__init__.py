"""cmr_landmark: cardiac MR landmark detection, the library under the Gadgetron gadget.

The data path reads in one direction, one module per step:

    ISMRMRD image / NIfTI / DICOM  (io)
      -> series buffer             (series)
      -> preprocess                (preprocess: magnitude, resample to fixed mm grid, crop, normalise)
      -> model                     (model_store: TorchScript loaded by sha256 from models/manifest.json)
      -> heatmap decode            (heatmaps.decode_heatmaps)
      -> geometry and measures     (geometry, measures)
      -> annotate                  (annotate)
      -> send                      (gadget)
"""

__version__ = "0.1.0"
