"""pyro-vae: a variational autoencoder in Pyro whose math is hand-derived and checked against Pyro."""

__version__ = "0.1.0"
