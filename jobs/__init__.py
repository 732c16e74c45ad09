"""Thin entry points: `python -m jobs.X --config FILE --set a.b=v`. Each parses its config and calls one basisfm function."""
