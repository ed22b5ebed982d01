"""tabfleetctl: the command-line client of tabfleetd."""
