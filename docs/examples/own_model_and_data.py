"""Your own model and data: a convolutional encoder and decoder of your own, trained on 3x32x32 colour
images made here, then resumed and loaded back.

    python docs/examples/own_model_and_data.py [--out runs/own] [--images 2000] [--epochs 4]
"""

import argparse

import torch
from torch import nn

import pyro_vae


def stripes(n: int, seed: int = 0) -> torch.Tensor:
    """n colour images (n, 3, 32, 32) in [0, 1]: a stripe pattern of random angle, frequency and colour."""
    g = torch.Generator().manual_seed(seed)
    angle, frequency = torch.rand(n, 1, 1, generator=g) * torch.pi, 0.2 + 0.6 * torch.rand(n, 1, 1, generator=g)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    wave = 0.5 + 0.5 * torch.sin(frequency * (xx * angle.cos() + yy * angle.sin()))  # (n, 32, 32)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    return (wave.unsqueeze(1) * colour).clamp(0, 1)


class ConvEncoder(nn.Module):
    """x (batch, 3, 32, 32) -> (loc, scale) of q(z|x) = N(loc, diag scale^2), each (batch, z_dim)."""

    def __init__(self, z_dim: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten()
        )
        self.head = nn.Linear(64 * 8 * 8, 2 * z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self.head(self.net(x)).chunk(2, dim=-1)
        return loc, log_scale.exp()


class ConvDecoder(nn.Module):
    """z (batch, z_dim) -> the logits of p(x|z), (batch, 3, 32, 32)."""

    def __init__(self, z_dim: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(z_dim, 64 * 8 * 8), nn.ReLU(), nn.Unflatten(1, (64, 8, 8)))
        self.net = nn.Sequential(nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 3, 4, 2, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.body(z))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/own-model")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()

    images = stripes(args.images + 500)
    data = (images[: args.images], images[args.images :])  # (train, test): tensors of any image shape
    config = pyro_vae.TrainConfig(
        model=pyro_vae.ModelConfig(z_dim=16, likelihood="continuous-bernoulli"),  # grey levels in [0, 1]
        epochs=args.epochs // 2,
        batch_size=100,
        out=args.out,
    )
    parts = dict(encoder=ConvEncoder(16), decoder=ConvDecoder(16))
    run = pyro_vae.train(config, data=data, **parts)
    print(f"after {run.metrics[-1]['epoch']} epochs: test loss {run.metrics[-1]['test_loss']:.2f} nats/image")

    # on to the last epoch, exactly as if it had never stopped: the same data and modules again
    run = pyro_vae.resume(args.out, epochs=args.epochs, data=data, encoder=ConvEncoder(16), decoder=ConvDecoder(16))
    print(f"after {run.metrics[-1]['epoch']} epochs: test loss {run.metrics[-1]['test_loss']:.2f} nats/image")

    # back from the folder: new instances of the same classes receive the trained weights
    loaded = pyro_vae.load_run(args.out, data=data, encoder=ConvEncoder(16), decoder=ConvDecoder(16))
    print(f"loaded: {loaded.evaluate(samples=100, images=200).negative_elbo:.2f} nats/image on 200 test images")
    print("samples:", tuple(loaded.sample(8).shape), "(rows of 3 * 32 * 32 pixels)")


if __name__ == "__main__":
    main()
