"""Waveform work on the worker: encoding, decoding, joining and loudness (numpy, soundfile)."""
