"""Pure decision code: plain state in, new state and events out. No I/O, no frameworks."""
