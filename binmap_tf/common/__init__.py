"""Foundations every stage uses: atomic file writes, data and cache locations, image decoding and checks."""
