"""Stage 1: the CNN-aware binary map: backbones, the hashing layer (hconv8), the Keras model, tiling."""
