"""Frames from cameras: stream readers with timeouts and reconnects, and their status."""
