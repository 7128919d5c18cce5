"""ExampleDevice: a driver that talks to an instrument over TCP (a line protocol), with a simulator and an interface."""
