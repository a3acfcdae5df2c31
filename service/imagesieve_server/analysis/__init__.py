"""Dataset analyses as plain functions on numpy arrays (no gRPC, no I/O):
which labels are wrong (``label_noise``), how many images are enough
(``sample_size``). The serving layer calls them; it does not contain them."""
