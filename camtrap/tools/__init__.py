"""Tools that ship with the package: the classifier benchmark and the checkpoint builder."""
