"""Crops to species: the backend seam and its engines, the crop queue, the inference thread."""
