"""Benchmarks of filestore-fastapi against the physical limit and the usual alternatives.

Run them with ``make bench``; see ``benchmarks/README.md``.
"""
