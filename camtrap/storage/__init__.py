"""SQLite history and the MQTT outbox, and the best-crop files beside them."""
