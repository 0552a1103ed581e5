"""The semi-supervised M2 (`core.programs.m2`): its enumerated ELBO against the paper's sum over the labels by
hand, on the same noise (float64), for labelled and unlabelled images; the auxiliary classification term; and
M2 trained by the engine from a quarter of the labels, resumed exactly, classifying the test images."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from test_programs import LABELLED, PIXELS

import pyro_vae
from pyro_vae import data
from pyro_vae.cli.evaluate import main as evaluate_main
from pyro_vae.cli.train import main
from pyro_vae.core.estimators import ELBOLoss, build_elbo
from pyro_vae.core.model_config import ModelConfig
from pyro_vae.core.program import Program
from pyro_vae.core.programs.m2 import SemiSupervisedVAE, joined
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.training.run import weights_digest

CLASSES, Z = 3, 2


def small_m2(aux_weight: float = 0.0) -> SemiSupervisedVAE:
    torch.manual_seed(0)
    return SemiSupervisedVAE(pixels=PIXELS, classes=CLASSES, z_dim=Z, hidden=8, aux_weight=aux_weight).double()


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.bernoulli(torch.rand(5, PIXELS, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    return x, torch.tensor([1, -1, 0, -1, 2])


def hand_elbo(m2: SemiSupervisedVAE, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Per image: sum_y q(y|x) [log p(x|y, z_y) + log p(y) + log p(z_y) - log q(z_y|x, y)] + H(q(y|x)), with q(y|x)
    the point mass at a known label, z_y (C, images, Z) the guide's draws for each label."""
    probs = torch.where((y >= 0).unsqueeze(-1), torch.nn.functional.one_hot(y.clamp(min=0), CLASSES).double(),
                        m2.classifier(x).softmax(-1))  # fmt: skip
    terms = []
    for c in range(CLASSES):
        label = torch.nn.functional.one_hot(torch.full((x.shape[0],), c), CLASSES).double()
        loc, log_scale = m2.encoder(torch.cat([x, label], -1)).chunk(2, -1)
        log_q = dist.Normal(loc, log_scale.exp()).log_prob(z[c]).sum(-1)
        log_lik = dist.Bernoulli(logits=m2.decoder(torch.cat([z[c], label], -1))).log_prob(x).sum(-1)
        log_prior = dist.Normal(0.0, 1.0).log_prob(z[c]).sum(-1) - math.log(CLASSES)
        terms.append(log_lik + log_prior - log_q)
    entropy = -(probs * probs.clamp(min=1e-300).log()).sum(-1)
    return (probs * torch.stack(terms, -1)).sum(-1) + entropy


def test_the_enumerated_elbo_is_the_papers_sum_over_labels_on_the_same_noise():
    m2 = small_m2()
    x, y = batch()
    program = Program(m2.model, m2.guide, ModelConfig(x_dim=PIXELS)).discover((x, y), "enum")
    pyro.set_rng_seed(5)
    value = ELBOLoss(program, build_elbo("enum"))(x, 1.0, y)
    pyro.set_rng_seed(5)
    guide_trace = poutine.trace(poutine.enum(program.run_guide, first_available_dim=-2)).get_trace(x, y)
    z = guide_trace.nodes["z"]["value"]
    assert z.shape == (CLASSES, 5, Z)  # one draw per label value and image
    assert torch.allclose(value, -hand_elbo(m2, x, y, z).mean(), rtol=0, atol=1e-10)


def test_the_auxiliary_term_is_alpha_log_q_of_the_labelled_images_and_only_in_training():
    m2 = small_m2(aux_weight=46.0)
    x, y = batch()
    program = Program(m2.model, m2.guide, ModelConfig(x_dim=PIXELS)).discover((x, y), "enum")
    loss = ELBOLoss(program, build_elbo("enum"))
    pyro.set_rng_seed(5)
    training = loss(x, 1.0, y)
    program.eval()
    pyro.set_rng_seed(5)
    evaluating = loss(x, 1.0, y)
    log_q = dist.Categorical(logits=m2.classifier(x)).log_prob(y.clamp(min=0))
    assert torch.allclose(training - evaluating, -46.0 * torch.where(y >= 0, log_q, 0.0).mean(), rtol=0, atol=1e-10)


def test_joined_broadcasts_an_enumerated_label_against_the_images():
    images, labels = torch.zeros(4, 6), torch.ones(3, 1, 2)
    assert joined(images, labels).shape == (3, 4, 8)


def test_m2_learns_to_classify_from_a_quarter_of_the_labels_and_resumes_exactly(tmp_path):
    quiet = dict(progress=False, log=lambda line: None)

    def parts():
        torch.manual_seed(0)
        m2 = SemiSupervisedVAE(pixels=PIXELS, classes=CLASSES, z_dim=Z, hidden=16)
        return dict(model=m2.model, guide=m2.guide)

    def config(name: str, epochs: int) -> pyro_vae.TrainConfig:
        return pyro_vae.TrainConfig(epochs=epochs, estimator="enum", batch_size=32, lr=0.01, eval_samples=10,
                                    out=str(tmp_path / name))  # fmt: skip

    straight = pyro_vae.train(config("a", 12), data=LABELLED, **parts(), **quiet)
    pyro_vae.train(config("b", 5), data=LABELLED, **parts(), **quiet)
    resumed = pyro_vae.resume(tmp_path / "b", epochs=12, data=LABELLED, **parts(), **quiet)
    assert weights_digest(straight.vae) == weights_digest(resumed.vae)
    test = straight.test_data()
    accuracy = (straight.vae.owners[0].classify(test.test) == test.test_labels).double().mean().item()
    assert accuracy > 0.9  # three well-separated prototypes: chance is 1/3


def test_keeping_labels_keeps_as_many_of_each_class_and_marks_the_rest_missing():
    dataset = data.load_dataset("default")
    kept = data.keep_labels(dataset, 100).train_labels
    assert (kept >= 0).sum() == 100 and torch.bincount(kept[kept >= 0], minlength=10).tolist() == [10] * 10
    assert bool((kept[kept >= 0] == dataset.train_labels[kept >= 0]).all())
    assert torch.equal(kept, data.keep_labels(dataset, 100).train_labels)  # a fixed draw
    other = data.keep_labels(dataset, 100, seed=6).train_labels  # another draw (--labels-seed), as balanced
    assert not torch.equal(kept, other) and torch.bincount(other[other >= 0], minlength=10).tolist() == [10] * 10
    with pytest.raises(DataError, match="share equally"):
        data.keep_labels(dataset, 105)


def test_the_registered_m2_trains_resumes_and_loads_by_name_with_its_accuracy_recorded(tmp_path):
    """TrainConfig(program="m2"): no model or guide given, none needed to resume or load; its accuracy in
    metrics.jsonl each epoch."""
    quiet = dict(progress=False, log=lambda line: None)

    def config(name: str, epochs: int) -> pyro_vae.TrainConfig:
        return pyro_vae.TrainConfig(program="m2", estimator="enum", epochs=epochs, batch_size=32, eval_samples=5,
                                    out=str(tmp_path / name))  # fmt: skip

    straight = pyro_vae.train(config("a", 2), data=LABELLED, **quiet)
    pyro_vae.train(config("b", 1), data=LABELLED, **quiet)
    resumed = pyro_vae.resume(tmp_path / "b", epochs=2, data=LABELLED, **quiet)
    assert weights_digest(straight.vae) == weights_digest(resumed.vae)
    assert 0 <= straight.metrics[-1]["test_accuracy"] <= 1
    loaded = pyro_vae.load_run(tmp_path / "a", data=LABELLED)
    assert weights_digest(loaded.vae) == weights_digest(straight.vae)
    with pytest.raises(ConfigError, match="program m2 is built in"):
        pyro_vae.train(config("c", 1), data=LABELLED, **parts_of(small_m2()), **quiet)


def parts_of(m2: SemiSupervisedVAE) -> dict:
    return dict(model=m2.model, guide=m2.guide)


def test_m2_from_the_command_line_for_one_epoch(tmp_path):
    argv = ["--program", "m2", "--estimator", "enum", "--labels-kept", "100", "--epochs", "1", "--no-progress",
            "--eval-samples", "5", "--threads", "1", "--out", str(tmp_path / "m2")]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((tmp_path / "m2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["test_accuracy"] <= 1 and math.isfinite(record["test_log_likelihood"])
    # scripts/evaluate.py gives a program of images and labels its test labels
    assert evaluate_main([str(tmp_path / "m2"), "--samples", "5", "--images", "20", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "m2" / "evaluation-epoch1-K5.json").read_text())
    assert math.isfinite(result["test_log_likelihood"]) and result["images"] == 20


def test_grey_pixels_are_scored_by_the_tutorials_binary_cross_entropy():
    """--binarize none, as Pyro's tutorial trains M2: the x site's log-density of a grey image is -BCE."""
    m2 = small_m2()
    x = torch.rand(4, PIXELS, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    trace = poutine.trace(poutine.condition(m2.model, data={"y": y})).get_trace(x, y)
    logits = m2.decoder(joined(trace.nodes["z"]["value"], torch.nn.functional.one_hot(y, CLASSES).double()))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(trace.nodes["x"]["fn"].log_prob(x), -bce, rtol=1e-12, atol=1e-12)


def test_the_conditional_samples_figure_has_a_row_per_class_sharing_its_columns_z(tmp_path):
    m2 = small_m2()
    images, rows, _ = m2.figures(*batch(), per_class=4)["conditional_samples"]
    assert rows == CLASSES and images.shape == (CLASSES * 4, PIXELS) and bool(((images >= 0) & (images <= 1)).all())
    z = torch.randn(4, Z, generator=torch.Generator().manual_seed(0)).double()
    second_class = torch.sigmoid(m2.decoder(joined(z, torch.nn.functional.one_hot(torch.tensor(1), CLASSES).double())))
    torch.testing.assert_close(images[4:8], second_class)
    argv = ["--program", "m2", "--estimator", "enum", "--labels-kept", "100", "--epochs", "1", "--no-progress",
            "--threads", "1", "--out", str(tmp_path / "m2")]  # fmt: skip
    assert main(argv) == 0 and (tmp_path / "m2" / "conditional_samples.png").stat().st_size > 0


def test_without_enumeration_a_missing_label_is_sampled_from_q():
    """enumerate_labels=False: the guide's y site carries no enumeration mark, so Trace_ELBO draws it."""
    m2 = SemiSupervisedVAE(pixels=PIXELS, classes=CLASSES, z_dim=Z, hidden=8, enumerate_labels=False).double()
    x, y = batch()
    site = poutine.trace(m2.guide).get_trace(x, y).nodes["y"]
    assert site["infer"] == {} and site["value"].shape == (5,) and bool((site["value"][y >= 0] == y[y >= 0]).all())
    enumerated = poutine.trace(small_m2().guide).get_trace(x, y).nodes["y"]
    assert enumerated["infer"] == {"enumerate": "parallel"}


def test_the_classifier_learns_from_the_unlabelled_images_by_the_gradient_of_the_sum_over_labels():
    """TraceEnum_ELBO's gradient for q(y|x)'s weights is that of sum_y q(y|x) ELBO_y + H(q) by hand, on the same
    noise (float64): the unlabelled images reach the classifier exactly as the paper's bound says."""
    m2 = small_m2()
    x, y = batch()
    program = Program(m2.model, m2.guide, ModelConfig(x_dim=PIXELS)).discover((x, y), "enum")
    pyro.set_rng_seed(5)
    engine = torch.autograd.grad(ELBOLoss(program, build_elbo("enum"))(x, 1.0, y), list(m2.classifier.parameters()))
    pyro.set_rng_seed(5)
    z = poutine.trace(poutine.enum(program.run_guide, first_available_dim=-2)).get_trace(x, y).nodes["z"]["value"]
    by_hand = torch.autograd.grad(-hand_elbo(m2, x, y, z.detach()).mean(), list(m2.classifier.parameters()))
    assert any(bool(g.abs().max() > 1e-3) for g in by_hand)  # the unlabelled images do move the classifier
    for mine, theirs in zip(engine, by_hand):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-12)
