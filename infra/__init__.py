"""The declarative topology and the code that applies it, locally and in the cloud."""
