"""Jumpstarter drivers and their clients: each module's docstring says what it drives."""
