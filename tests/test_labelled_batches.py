"""The labelled images in batches of their own (`labelled_batches`, Pyro's semi-supervised tutorial's layout):
which batches, every image once an epoch, a resume inside an epoch taking up the same batches; and M2's
auxiliary weight as a setting."""

from __future__ import annotations

import pytest
import torch

import pyro_vae
from pyro_vae.core.programs import registered_parts
from pyro_vae.errors import ConfigError
from pyro_vae.training import loop
from pyro_vae.training.batch_layout import batches_per_epoch, epoch_batches
from pyro_vae.training.run import weights_digest
from pyro_vae.training.signals import Interrupted

QUIET = dict(progress=False, log=lambda line: None)


def layout(images: int, labelled: int, batch_size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    permutation = torch.randperm(images, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(images, dtype=torch.bool)
    mask[torch.randperm(images, generator=torch.Generator().manual_seed(1))[:labelled]] = True
    return epoch_batches(permutation, batch_size, mask), mask


@pytest.mark.parametrize("images, labelled, batch_size", [(50_000, 3000, 200), (50_000, 100, 200), (20, 5, 4),
                                                          (10, 10, 3), (10, 1, 4)])  # fmt: skip
def test_labelled_batches_come_every_images_over_labelled_batches_and_every_image_once(images, labelled, batch_size):
    batches, mask = layout(images, labelled, batch_size)
    assert len(batches) == batches_per_epoch(images, batch_size, labelled)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(images))  # each image once
    assert all(mask[b].all() or not mask[b].any() for b in batches)  # never mixed
    assert sum(bool(mask[b].all()) for b in batches) == -(-labelled // batch_size)


def test_the_tutorials_3000_labels_fall_in_batches_1_17_33_and_so_on():
    batches, mask = layout(50_000, 3000, 200)
    assert [i for i, b in enumerate(batches) if mask[b].all()] == [1 + 16 * k for k in range(15)]


def test_k_labelled_per_batch_walk_the_labelled_images_in_turn_beside_each_unlabelled_batch():
    permutation = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    labelled = torch.zeros(50, dtype=torch.bool)
    labelled[:7] = True  # 7 labelled, 43 unlabelled: batches of 10 unlabelled (the last 3) and 4 labelled
    batches = epoch_batches(permutation, 10, labelled, per_batch=4)
    assert len(batches) == batches_per_epoch(50, 10, 7, per_batch=4) == 5
    unlabelled = torch.cat([b[~labelled[b]] for b in batches])
    assert torch.equal(unlabelled.sort().values, torch.arange(7, 50))  # each unlabelled image once
    assert [len(b) for b in batches] == [14, 14, 14, 14, 7]
    walk = torch.cat([b[labelled[b]] for b in batches])
    order = permutation[labelled[permutation]]
    assert torch.equal(walk, order.repeat(3)[:20])  # in the epoch's order, from its start again when used up


def test_without_labelled_batches_the_epoch_is_the_permutation_cut_in_order():
    permutation = torch.randperm(10)
    assert [b.tolist() for b in epoch_batches(permutation, 4, None)] == [b.tolist() for b in permutation.split(4)]


def m2_config(tmp_path, name: str, epochs: int, **settings) -> pyro_vae.TrainConfig:
    """A small M2 run on one thread (a run and its resume must round their sums alike; conftest's fixture would
    also hold the count steady)."""
    return pyro_vae.TrainConfig(program="m2", estimator="enum", labels_kept=100, epochs=epochs, batch_size=512,
                                out=str(tmp_path / name), threads=1, **settings)  # fmt: skip


@pytest.mark.parametrize(
    "layout, steps",
    [
        (dict(labelled_batches=True), 1 + 8),  # 100 labelled: 1 batch; 3,900 unlabelled: 8
        (dict(labelled_per_batch=64), 8),  # 8 batches of 512 unlabelled and 64 labelled
    ],
)
def test_an_m2_run_stopped_inside_an_epoch_resumes_on_the_same_batches_bit_for_bit(
    tmp_path, monkeypatch, layout, steps
):
    straight = pyro_vae.train(m2_config(tmp_path, "a", 2, **layout), **QUIET)
    calls = iter(range(10_000))
    monkeypatch.setattr(loop, "agreed_flag", lambda flag, run: lambda: next(calls) == 4)  # Ctrl-C at step 5
    with pytest.raises(Interrupted):
        pyro_vae.train(m2_config(tmp_path, "b", 2, **layout), **QUIET)
    monkeypatch.undo()
    assert pyro_vae.load_run(tmp_path / "b").metrics == []  # it stopped inside epoch 1
    resumed = pyro_vae.resume(tmp_path / "b", **QUIET)
    assert weights_digest(resumed.vae) == weights_digest(straight.vae)
    assert straight.metrics[-1]["step"] == 2 * steps


def test_the_aux_weight_is_m2s_and_a_setting():
    assert registered_parts("m2", 784, 0, {"aux_weight": 0.0}).model.__self__.aux_weight == 0.0
    assert pyro_vae.TrainConfig(program="m2", aux_weight=3.0).program_options == {"aux_weight": 3.0}
    with pytest.raises(ConfigError, match="aux_weight weights M2's classification loss"):
        pyro_vae.TrainConfig(aux_weight=3.0)
    with pytest.raises(ConfigError, match="labelled_batches and labelled_per_batch set the labelled images apart"):
        pyro_vae.TrainConfig(program="m2", labelled_batches=True)
    with pytest.raises(ConfigError, match="two layouts of the labels: choose one"):
        pyro_vae.TrainConfig(program="m2", labels_kept=100, labelled_batches=True, labelled_per_batch=10)
    with pytest.raises(ConfigError, match="settings given_quadrants and cvae_baseline are for program cvae"):
        pyro_vae.TrainConfig(given_quadrants=2)
