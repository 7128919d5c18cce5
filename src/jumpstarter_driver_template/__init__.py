"""Jumpstarter drivers: ExamplePower (a power switch) and ExampleCustom (a custom device), with its client."""
