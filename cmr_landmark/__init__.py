"""cmr_landmark: cardiac MR landmark detection, the library under the Gadgetron gadget.

The data path reads in one direction, one module per step:

    ISMRMRD image                  (mrd_connection: from the gadget's connection, raw bytes kept)
      / NIfTI / DICOM / .h5        (io: offline files)
      -> usable?                   (image_checks: nothing to find in, or a label map)
      -> series buffer             (series)
      -> preprocess                (preprocess: magnitude, resample to fixed mm grid, crop, normalise)
      -> model                     (model_store: TorchScript loaded by sha256 from models/manifest.json; detector)
      -> heatmap decode            (heatmaps.decode_heatmaps)
      -> geometry and measures     (geometry, measures; one slice's steps together: slice_measures)
      -> annotate                  (annotate: crosses; output_images: the copies and their attributes)
      -> send                      (gadget; passive mode: server)
"""

__version__ = "0.1.0"
