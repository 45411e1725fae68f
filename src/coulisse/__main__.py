"""`python -m coulisse ...` runs the command line."""

from coulisse.interfaces.cli import main

main()
