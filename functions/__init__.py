"""Thin Cloud Functions entrypoints: parse, call one core function, map the outcome."""
