"""Tooling for the embedded default (``make services``/``run``/``stop``): engines, env file, run summary."""
