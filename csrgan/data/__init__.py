"""Data: image I/O, MATLAB-compatible resize, synthetic degradations, datasets, downloads, demo set."""
