"""Day summaries: built from the database, rendered as a table, Markdown and a mosaic, and
written to files."""
