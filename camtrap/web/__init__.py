"""The daemon's HTTP side: the web interface (pages, JSON API, exports, reviews), health and
Prometheus metrics."""
