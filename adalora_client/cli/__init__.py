"""The `adalora` command line."""
