"""Interfaces: the command line, corpus jobs and the HTTP server, all on top of `coulisse.pipeline`."""
