"""A VAE whose prior is learned, a mixture of Gaussians, written as a Pyro program and trained by pyro-vae.

    python docs/examples/mixture_prior.py                      # 20 epochs on the default digits
    python docs/examples/mixture_prior.py --epochs 2 --out runs/mixture-prior-quick

The program is the model and the guide, as Pyro's tutorials write them (methods of a module); pyro-vae trains
it with its own step, checkpoints, exact resume and evaluation (docs/own-program.md).
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import pyro_vae


class MixturePriorVAE(nn.Module):
    """p(z) = sum_k pi_k N(z; m_k, diag s_k^2), learned with the networks; x | z ~ Bernoulli(decoder(z));
    q(z|x) = N(mu(x), diag sigma(x)^2)."""

    def __init__(self, pixels=784, z_dim=16, components=10, hidden=400):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, pixels))
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(components, z_dim))

    def prior(self):
        components = dist.Normal(self.means, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)

    def model(self, x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("images", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/mixture-prior")
    parser.add_argument("--samples", type=int, default=1000, help="importance samples per test image")
    args = parser.parse_args()

    torch.manual_seed(0)  # the networks' first weights
    vae = MixturePriorVAE()
    config = pyro_vae.TrainConfig(binarization="dynamic", epochs=args.epochs, out=args.out)
    run = pyro_vae.train(config, model=vae.model, guide=vae.guide)
    evaluation = run.evaluate(samples=args.samples)
    log_px = evaluation.log_likelihood
    print(
        f"test negative ELBO {evaluation.negative_elbo:.2f}, log p(x) {log_px.value:.2f} ± {log_px.standard_error:.2f}"
    )

    again = MixturePriorVAE()  # a new instance: the run's weights are loaded into it
    loaded = pyro_vae.load_run(run.path, model=again.model, guide=again.guide)
    print(f"loaded: the learned mixture weights {loaded.vae.owners[0].logits.softmax(0).detach().numpy().round(3)}")


if __name__ == "__main__":
    main()
