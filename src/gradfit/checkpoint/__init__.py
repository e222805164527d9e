"""Checkpoints: atomic I/O (``io``), saving and export (``saving``), backups (``backup``).

Nothing here imports ``gradfit.training``: what is saved comes in as objects.
"""
