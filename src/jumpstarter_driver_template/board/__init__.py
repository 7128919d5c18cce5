"""ExampleBoard: a parent driver whose children are a power supply and a power switch, with a client workflow."""
