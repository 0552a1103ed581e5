"""The conditional VAE (`core.programs.cvae`): the tutorial's quadrants, a model that observes only the pixels
to complete, the importance-sampled conditional log-likelihood against a linear-Gaussian conditional model's
closed form, and the CVAE trained by name, resumed exactly and loaded back."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pyro_vae
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.sample import main as sample_main
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.program import Program
from pyro_vae.core.programs.cvae import ConditionalVAE, given_mask
from pyro_vae.evaluation.program_likelihood import program_log_likelihood
from pyro_vae.training.run import weights_digest


@pytest.mark.parametrize(
    "quadrants, rows, columns", [(1, [14, 27], [0, 13]), (2, [0, 27], [0, 13]), (3, [0, 13], [14, 27])]
)
def test_the_given_quadrants_are_the_tutorials(quadrants, rows, columns):
    """1: the bottom left; 2: the left half; 3: all but the bottom right (a pixel of each corner checked)."""
    given = given_mask(quadrants).reshape(28, 28)
    assert int(given.sum()) == 196 * quadrants
    assert all(given[r, c] for r in rows for c in columns)
    assert not given[27, 27]  # the bottom right is always to complete


def test_the_model_observes_only_the_pixels_to_complete():
    cvae = ConditionalVAE(quadrants=3, z_dim=4, hidden=8)
    x = torch.rand(5, 784)
    trace = poutine.trace(cvae.model).get_trace(x)
    observed = [name for name, site in trace.nodes.items() if site["type"] == "sample" and site["is_observed"]]
    assert observed == ["rest"] and trace.nodes["rest"]["value"].shape == (5, 196)
    completed = cvae.complete(x, samples=2)
    assert completed.shape == (2, 5, 784) and torch.equal(
        completed[:, :, cvae.given], x[:, cvae.given].expand(2, -1, -1)
    )


A = torch.tensor([[0.8, -0.3], [0.2, 0.5]], dtype=torch.float64)  # p(z | g) = N(A g, I)
B = torch.tensor([[1.0, 0.4], [-0.6, 0.9], [0.3, 0.3]], dtype=torch.float64)  # p(r | z) = N(B z, s^2 I)
S = 0.5


def conditional_program(shift: float) -> tuple:
    """x = (g, r): g (2 pixels) given, r (3) to complete; the guide q(z | g, r) at the exact posterior, its mean
    moved by `shift`."""
    precision = torch.eye(2, dtype=torch.float64) + B.T @ B / S**2
    covariance = torch.linalg.inv(precision)

    def model(x):
        g, r = x[:, :2], x[:, 2:]
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(g @ A.T, 1.0).to_event(1))
            pyro.sample("rest", dist.Normal(z @ B.T, S).to_event(1), obs=r)

    def guide(x):
        pyro.param("unused", torch.zeros(1))
        g, r = x[:, :2], x[:, 2:]
        mean = (g @ A.T + r @ B / S**2) @ covariance.T + shift
        with pyro.plate("images", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(mean, covariance))

    return model, guide


def closed_form(x: torch.Tensor) -> torch.Tensor:
    """log p(r | g) = log N(r; B A g, B B^T + s^2 I)."""
    covariance = B @ B.T + S**2 * torch.eye(3, dtype=torch.float64)
    return dist.MultivariateNormal(x[:, :2] @ (B @ A).T, covariance).log_prob(x[:, 2:])


@pytest.mark.parametrize("shift, exact", [(0.0, True), (0.4, False)])
def test_the_conditional_log_likelihood_meets_the_linear_gaussian_closed_form(shift, exact):
    """Importance sampling from q(z | g, r): exact (every weight p(r|g)) at the exact posterior, and within 5
    standard errors of the closed form from a guide off it."""
    x = torch.randn(20, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    program = Program(*conditional_program(shift), ModelConfig(x_dim=5)).discover((x,))
    estimate = program_log_likelihood(program.run_model, program.run_guide, (x,), 2000, seed=1)
    truth = closed_form(x).mean().item()
    if exact:
        assert estimate.value == pytest.approx(truth, abs=1e-10)
    else:
        assert abs(estimate.value - truth) < 5 * estimate.standard_error < 0.1


def test_the_cvae_trains_by_name_resumes_exactly_and_loads_back(tmp_path):
    quiet = dict(progress=False, log=lambda line: None)

    def config(name: str, epochs: int) -> pyro_vae.TrainConfig:
        return pyro_vae.TrainConfig(program="cvae", given_quadrants=2, epochs=epochs, eval_samples=10,
                                    out=str(tmp_path / name))  # fmt: skip

    straight = pyro_vae.train(config("a", 2), **quiet)
    pyro_vae.train(config("b", 1), **quiet)
    resumed = pyro_vae.resume(tmp_path / "b", epochs=2, **quiet)
    assert weights_digest(straight.vae) == weights_digest(resumed.vae)
    assert straight.metrics[-1]["test_loss"] < straight.metrics[0]["test_loss"]
    loaded = pyro_vae.load_run(tmp_path / "a")
    assert weights_digest(loaded.vae) == weights_digest(straight.vae)
    assert int(loaded.vae.owners[0].given.sum()) == 392


def test_evaluate_takes_ais_over_the_cvaes_latent_sites_and_refuses_what_reads_the_vaes_parts(tmp_path, capsys):
    pyro_vae.train(pyro_vae.TrainConfig(program="cvae", epochs=1, out=str(tmp_path / "c")), progress=False,
                   log=lambda line: None)  # fmt: skip
    run = str(tmp_path / "c")
    assert evaluate_main([run, "--samples", "5", "--images", "4", "--ais", "3", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "c" / "evaluation-epoch1-K5.json").read_text())
    assert math.isfinite(result["ais_log_likelihood"]) and result["images"] == 4
    assert evaluate_main([run, "--samples", "5", "--prior"]) == 2
    assert "read the built-in VAE's prior and guide" in capsys.readouterr().err


def test_the_completions_figure_keeps_the_given_quadrants_and_ends_with_the_truth(tmp_path):
    cvae = ConditionalVAE(quadrants=2)
    x = torch.rand(4, 784, generator=torch.Generator().manual_seed(0))
    images, rows, _ = cvae.figures(x)["completions"]
    assert rows == 5 and images.shape == (20, 784)
    given = cvae.given
    assert torch.equal(images[:4, given], x[:, given]) and bool((images[:4, ~given] == 0.5).all())
    assert all(torch.equal(images[4 * r : 4 * r + 4, given], x[:, given]) for r in range(1, 4))  # kept
    assert torch.equal(images[16:], x) and not torch.equal(images[4:8], images[8:12])  # two draws differ
    pyro_vae.train(pyro_vae.TrainConfig(program="cvae", epochs=1, out=str(tmp_path / "c")), progress=False,
                   log=lambda line: None)  # fmt: skip
    assert (tmp_path / "c" / "completions.png").stat().st_size > 0


def test_the_baseline_guides_the_prior_network_and_only_its_own_objective_trains_it():
    """cvae_baseline: the prior network reads the given pixels and the baseline's guess of the rest; the
    training factor is log Bernoulli(rest | baseline(given)), absent in eval mode, and its gradient reaches
    the baseline alone (the guess the prior network reads is detached)."""
    torch.manual_seed(0)
    cvae = ConditionalVAE(quadrants=1, z_dim=4, hidden=8, baseline=True)
    x = torch.rand(5, 784, generator=torch.Generator().manual_seed(3))
    guess = torch.sigmoid(cvae.baseline(cvae.masked(x)))
    assert torch.equal(cvae.prior_input(x), torch.where(cvae.given, x, guess))
    trace = poutine.trace(cvae.model).get_trace(x)
    rest = x[:, ~cvae.given]
    logits = cvae.baseline(cvae.masked(x))[:, ~cvae.given]
    expected = -torch.nn.functional.binary_cross_entropy_with_logits(logits, rest, reduction="none").sum(-1)
    torch.testing.assert_close(trace.nodes["baseline"]["fn"].log_prob(trace.nodes["baseline"]["value"]), expected)
    trace.nodes["rest"]["fn"].log_prob(rest).sum().backward()  # the CVAE's own likelihood: not the baseline's
    assert all(p.grad is None for p in cvae.baseline.parameters())
    cvae.eval()
    assert "baseline" not in poutine.trace(cvae.model).get_trace(x).nodes
    assert pyro_vae.TrainConfig(program="cvae", cvae_baseline=True).program_options == {
        "quadrants": 1,
        "baseline": True,
    }


def test_sample_draws_a_programs_own_pictures_from_its_best_weights(tmp_path, capsys):
    config = pyro_vae.TrainConfig(program="cvae", epochs=2, validation=500, patience=1, out=str(tmp_path / "c"))
    pyro_vae.train(config, progress=False, log=lambda line: None)
    assert sample_main([str(tmp_path / "c"), "--best", "--images", "5", "--out", str(tmp_path / "pics")]) == 0
    assert (tmp_path / "pics" / "completions.png").stat().st_size > 0
    assert sample_main([str(tmp_path / "c"), "--reconstruct", "0", "--out", str(tmp_path / "no")]) == 2
    assert "a program draws its own pictures" in capsys.readouterr().err and not (tmp_path / "no").exists()
