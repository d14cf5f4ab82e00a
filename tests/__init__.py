"""Tests, and the test servers and helpers that bench/ reuses (`from tests.servers import ...`)."""
