"""Collectors: each turns sources into one kind of figure, cached by process identity and pruned every run."""
