"""ExampleStorageMux: a second standard interface, upstream's StorageMuxFlasherInterface: no client code here."""
