"""Importable helpers that tests hand to the real CLI (``--trainer.callbacks+=tests.helpers...``)."""
