"""Runs untrusted code in a container and returns a result dataclass.

A plain Python library that never imports Django (see the code-interpreter
issue); the platform's ``tools/code_interpreter`` plugin calls it.
"""
