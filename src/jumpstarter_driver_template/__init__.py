"""Example Jumpstarter drivers: start your own driver package from here."""
