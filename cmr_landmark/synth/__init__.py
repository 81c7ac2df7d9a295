"""Synthetic training images: contrasts and views the public data sets do not have (T1 maps, LAX views)."""
