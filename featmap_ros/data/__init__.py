"""Dataset readers and writers, synthetic sample generation, real/synthetic pairing."""
