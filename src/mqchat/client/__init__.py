"""chatctl: the command-line client of chatd."""
