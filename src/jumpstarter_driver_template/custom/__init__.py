"""ExampleCustom: a custom driver with validated config, exported methods of every kind, its client and `j` commands."""
