"""Fixtures that ship with the package so that the TypeScript tests can generate them too: the planted-signal
model and SAE (planted.py) and the recorded protocol session (recording.py)."""
