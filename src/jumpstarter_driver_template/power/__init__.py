"""ExamplePower: a standard interface. It implements upstream's PowerInterface, so `j power` needs no client code."""
