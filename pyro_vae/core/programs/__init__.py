"""The literature's VAEs written as Pyro programs, as a user would write them, for `train(config, model=...,
guide=...)`: `m2.SemiSupervisedVAE` (Kingma et al. 2014's M2, its label enumerated)."""
