"""Pure types and rules: no I/O, no framework, imports nothing above itself."""
