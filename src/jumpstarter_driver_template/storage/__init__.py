"""ExampleStorageMux: a second standard interface, upstream's StorageMuxFlasherInterface, and its client."""
