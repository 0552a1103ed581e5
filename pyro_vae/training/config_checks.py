"""The combinations of training settings that have no meaning, refused in one line each: `CombinationChecks`,
which TrainConfig inherits, its `__post_init__` calling `check_combinations` (the checks read the config's
own fields, so this module needs nothing of config.py)."""

from __future__ import annotations

from pyro_vae.core.compiled import check_traceable
from pyro_vae.core.estimators import IMPORTANCE_WEIGHTED, NEED_DENSITY, SCORE_FUNCTION
from pyro_vae.errors import ConfigError


class CombinationChecks:
    """A TrainConfig's checks of its settings taken together."""

    def check_combinations(self) -> None:
        """Every rule below, the first broken one raised."""
        if self.lr_schedule == "paper" and self.lr_final is not None:
            raise ConfigError("@lr_schedule paper sets its own decay (lr * 10^(-i/7) in stage i); leave out @lr_final")
        if self.init_output_bias and self.model.likelihood != "bernoulli":
            raise ConfigError(
                "@init_output_bias sets Bernoulli logits to the mean training image's; "
                f"it is for @likelihood bernoulli, not {self.model.likelihood}"
            )
        if self.estimator in IMPORTANCE_WEIGHTED and (self.beta != 1 or self.kl_warmup > 0):
            raise ConfigError(
                f"@estimator {self.estimator} trains an importance-weighted bound, which has no separate KL "
                "term to weight; leave @beta at 1 and @kl_warmup at 0"
            )
        if self.estimator in NEED_DENSITY and self.model.guide == "delta":
            raise ConfigError(
                f"@estimator {self.estimator} needs q's density at any z, and @guide delta is a point mass; "
                "train it with trace or meanfield"
            )
        if self.changed("aux_weight") and self.program != "m2":
            raise ConfigError(
                f"@aux_weight weights M2's classification loss; it is for @program m2, not {self.program}"
            )
        if (self.changed("given_quadrants") or self.cvae_baseline) and self.program != "cvae":
            raise ConfigError(
                f"the CVAE's settings @given_quadrants and @cvae_baseline are for @program cvae, not {self.program}"
            )
        if (self.labelled_batches or self.labelled_per_batch) and not self.labels_kept:
            raise ConfigError(
                "@labelled_batches and @labelled_per_batch set the labelled images apart: keep some with @labels_kept N"
            )
        if self.labelled_batches and self.labelled_per_batch:
            raise ConfigError("@labelled_batches and @labelled_per_batch are two layouts of the labels: choose one")
        if self.patience and not self.resolved_validation:
            raise ConfigError(
                "@patience stops when the validation loss stops falling: hold out a validation split with @validation N"
            )
        self._check_estimator_and_guide()
        if self.compile_backend != "inductor" and not self.compile:
            raise ConfigError(
                f"@compile_backend {self.compile_backend} chooses what runs @compile's graph; add @compile"
            )
        if self.compile:
            check_traceable(self.estimator)
            if self.compile_backend == "inductor" and self.model.guide == "local":
                raise ConfigError(
                    "@guide local's table gets sparse gradients, which inductor cannot compile into kernels; "
                    "use @compile_backend graph"
                )
            if self.validate_every_step:
                raise ConfigError(
                    "@validate_every_step reads values on the host at every step, which a traced graph does not "
                    "repeat; leave out @compile or @validate_every_step"
                )

    def changed(self, name: str) -> bool:
        """Whether setting `name` differs from its declared default."""
        return getattr(self, name) != type(self).__dataclass_fields__[name].default

    def _check_estimator_and_guide(self) -> None:
        """The combinations of estimator, guide and KL weight that have no meaning, refused."""
        if self.estimator in SCORE_FUNCTION and (self.beta != 1 or self.kl_warmup > 0):
            raise ConfigError(
                f"@estimator {self.estimator} weights the KL term as Pyro scales the z site, which "
                "would scale the score function's weight too; leave @beta at 1 and @kl_warmup at 0"
            )
        if self.estimator in SCORE_FUNCTION and self.model.guide == "delta":
            raise ConfigError(
                "@guide delta is a point mass: its log-density does not move with the encoder, so "
                "it has no score function; train it with a pathwise estimator (trace, meanfield)"
            )
        if self.beta == 0 and self.estimator.startswith("jit-"):
            raise ConfigError(
                f"@estimator {self.estimator} passes the KL weight as a traced tensor, and Pyro "
                "refuses a zero scale; use trace or meanfield with @beta 0"
            )
        if self.model.guide == "delta" and self.eval_samples > 0:
            raise ConfigError(
                "@guide delta is a point mass, which has no density to importance-sample log p(x) "
                "with; leave out @eval_samples"
            )
