"""Scheduled jobs: digest, nightly summary, retention, stats, uptime sampling and active hours."""
