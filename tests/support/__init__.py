"""Helpers the tests share: the sandbox they run against and how they land and read data.  Fixtures
stay in ``tests/conftest.py``; test modules import helpers from here, never from each other."""
