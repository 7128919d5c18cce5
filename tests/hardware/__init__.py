"""Hardware tests: a package, so that their module names do not clash with the end-to-end tests of the same unit."""
