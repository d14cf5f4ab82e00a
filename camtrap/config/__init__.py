"""The config file: its schema (pydantic, strict), the loader, crontab strings."""
