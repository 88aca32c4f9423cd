"""Data: image I/O, MATLAB-exact degradation, caches, data sets, DataModule, downloads."""
