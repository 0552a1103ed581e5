"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed and Welling 2014) as a Pyro program of images and
labels, its label summed out exactly where it is missing (`estimator="enum"`):

    model   y ~ Cat(1/C),  z ~ N(0, I),  x ~ Bernoulli(decoder(z, y))
    guide   y ~ q(y|x) = Cat(softmax(classifier(x))), enumerated; where the label is known, q(y|x) is the
            point mass at it (so the enumeration keeps that term alone, and log q(y) = 0);  z ~ q(z|x, y)

so that, per image, the ELBO is the paper's: labelled, E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z) -
log q(z|x,y)]; unlabelled, sum_y q(y|x) (that same bound at y) + H(q(y|x)). The classifier q(y|x) learns from
the unlabelled images only through that sum, which is weak; the paper adds alpha * log q(y|x) of the labelled
images to the objective (Pyro's tutorial: alpha = 46, "aux_weight" here), a factor of the model while
training (none in eval mode, so evaluations read the ELBO itself). Labels are int64, -1 where missing.
Bernoulli over grey pixels (`--binarize none`, as the tutorial trains it) is its binary cross entropy
(`validate_args=False`, as the tutorial's); with binarized images it is a likelihood.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional

from pyro_vae.core.networks import mlp


class SemiSupervisedVAE(nn.Module):
    """M2 with networks of `hidden` softplus units (Pyro's tutorial: 500, z = 50): `model(x, y)`, `guide(x, y)`
    for `train(config, model=m2.model, guide=m2.guide)` with `estimator="enum"`; `classify(x)` the predicted
    labels. With `enumerate_labels=False` a missing label is sampled from q(y|x) instead of summed out (train it
    with `estimator="trace"`: the classifier then learns from the score function), to see what enumeration buys."""

    def __init__(
        self,
        pixels: int = 784,
        classes: int = 10,
        z_dim: int = 50,
        hidden: int = 500,
        aux_weight: float = 46.0,
        enumerate_labels: bool = True,
    ):
        super().__init__()
        self.classes, self.z_dim, self.aux_weight = classes, z_dim, aux_weight
        self.label_infer = {"enumerate": "parallel"} if enumerate_labels else {}  # else sampled: Trace_ELBO's score
        self.classifier = network(pixels, hidden, classes)
        self.encoder = network(pixels + classes, hidden, 2 * z_dim)
        self.decoder = network(z_dim + classes, hidden, pixels)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            label = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.classes)))
            logits = self.decoder(joined(z, functional.one_hot(label, self.classes).to(x.dtype)))
            pyro.sample("x", dist.Bernoulli(logits=logits, validate_args=False).to_event(1), obs=x)
            if self.training and self.aux_weight:  # alpha log q(y|x) of the labelled images
                log_q = dist.Categorical(logits=self.classifier(x)).log_prob(y.clamp(min=0))
                pyro.factor("classification", self.aux_weight * torch.where(y >= 0, log_q, 0.0))

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        known = functional.one_hot(y.clamp(min=0), self.classes).to(x.dtype)
        probs = torch.where((y >= 0).unsqueeze(-1), known, self.classifier(x).softmax(-1))
        with pyro.plate("images", x.shape[0]):
            label = pyro.sample("y", dist.Categorical(probs=probs), infer=dict(self.label_infer))
            loc, log_scale = self.encoder(joined(x, functional.one_hot(label, self.classes).to(x.dtype))).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable label under q(y|x), per image."""
        return self.classifier(x).argmax(-1)

    @torch.no_grad()
    def figures(
        self, x: torch.Tensor, y: torch.Tensor, per_class: int = 10
    ) -> dict[str, tuple[torch.Tensor, int, str]]:
        """conditional_samples.png: one row per class y, the decoder's means at `per_class` draws z ~ N(0, I)
        (the same draws in every row, so a column keeps its style; fixed seed)."""
        z = torch.randn(per_class, self.z_dim, generator=torch.Generator().manual_seed(0)).to(x)
        labels = torch.arange(self.classes, device=x.device).repeat_interleave(per_class)
        codes = functional.one_hot(labels, self.classes).to(x.dtype)
        means = torch.sigmoid(self.decoder(torch.cat([z.repeat(self.classes, 1), codes], -1)))
        return {"conditional_samples": (means, self.classes, "p(x | y, z): a row per class y, a column per z")}

    def metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """The classifier's accuracy on the images whose labels are known (the engine records it each epoch)."""
        known = y >= 0
        return {"accuracy": (self.classify(x[known]) == y[known]).double().mean().item()}


def network(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """inputs -> hidden softplus units -> outputs (linear)."""
    return nn.Sequential(mlp([inputs, hidden], "softplus"), nn.Linear(hidden, outputs))


def joined(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a and b concatenated along their last dim, their leading dims broadcast (an enumerated label's dim)."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*shape, a.shape[-1]), b.expand(*shape, b.shape[-1])], -1)
