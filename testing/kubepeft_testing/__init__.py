"""A faithful-enough Kubernetes API server for tests, a fake kubelet, and an operator runner.

See ``apiserver.py`` for why this is our own small aiohttp app rather than kmock's emulator.
"""
