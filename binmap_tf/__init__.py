"""binmap_tf: CNN-aware binary maps for general semantic segmentation (ICIP 2016) in Keras 3."""

__version__ = "0.1.0"
