"""Predictions to bird visits: pure rules, no threads and no I/O."""
