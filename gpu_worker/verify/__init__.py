"""Checks of the audio a worker made: signal, intelligibility, voice; and word timings."""
