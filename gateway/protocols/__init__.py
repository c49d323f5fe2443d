"""The wire formats the gateway speaks, as pure functions: bytes in, rows out, and back."""
