"""Tools that ship with the package: the classifier benchmark, `camtrap evaluate` and the
checkpoint builder."""
