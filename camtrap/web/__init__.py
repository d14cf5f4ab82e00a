"""The daemon's HTTP side: health and Prometheus metrics."""
