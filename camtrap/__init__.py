"""camtrap: a bird-feeder and camera-trap daemon."""

__version__ = "0.1.0"
