"""ExampleConsole: a console as a byte stream. Upstream's PySerialClient is its client (pexpect, `j console`)."""
