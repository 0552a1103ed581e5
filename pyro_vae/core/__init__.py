"""The math and the Pyro program: closed forms (`analytic`), networks, guides q(z|x), the model p(x, z)
and the ELBO estimators. Imports nothing from `data`, `evaluation`, `training`, `experiments` or `cli`."""
