"""``edgelam privacy``: epsilon of a subsampled Gaussian mechanism, and noise calibration.

``cli.py`` registers :data:`privacy_group` on the ``edgelam`` group; invalid values raise a
:class:`~edgelam.config.ConfigError` naming the option, which the ``edgelam`` group prints as one
line (exit status 2).
"""

from __future__ import annotations

import json
from typing import Any

import rich_click as click

from edgelam.config import ConfigError

__all__ = ["privacy_group"]

_FLAGS = ("noise_multiplier", "sample_rate", "steps", "delta", "epsilon", "dataset_size",
          "accountant", "sampling", "relation")  # fmt: skip


def _flagged(err: ConfigError) -> ConfigError:
    """The error with its leading parameter name spelled as the command-line option."""
    text = str(err)
    for name in _FLAGS:
        if text.startswith(f"{name}:"):
            return ConfigError("--" + name.replace("_", "-") + text[len(name) :])
    return err


def _common(fn):
    """Options shared by both commands."""
    options = [
        click.option("--sample-rate", type=float, required=True,
                     help="q: Poisson inclusion probability, or m / n for fixed-size batches"),
        click.option("--steps", type=int, required=True, help="T: number of steps"),
        click.option("--delta", type=float, required=True, help="delta, in (0, 1)"),
        click.option("--accountant", type=click.Choice(["rdp", "pld"]), default="rdp",
                     show_default=True,
                     help="rdp (dp-accounting RDP) or pld (privacy loss distributions; Poisson "
                          "with add/remove only)"),
        click.option("--sampling", type=click.Choice(["poisson", "fixed"]), default="poisson",
                     show_default=True,
                     help="Poisson sampling, or fixed-size batches without replacement"),
        click.option("--relation", type=click.Choice(["add-remove", "replace-one"]), default=None,
                     help="adjacency [default: add-remove for poisson, replace-one for fixed]; "
                          "the noise multiplier is relative to the sensitivity under it"),
        click.option("--dataset-size", type=int, default=None,
                     help="n (needed by fixed, and by poisson with replace-one)"),
        click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON"),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _setting(kwargs: dict[str, Any]) -> dict[str, Any]:
    relation = kwargs.pop("relation")
    kwargs["relation"] = None if relation is None else relation.replace("-", "_")
    return kwargs


def _emit(out: dict[str, Any], text: str, as_json: bool) -> None:
    """Print ``out`` as JSON, or ``text`` completed by the setting: ``text; <setting>)``."""
    click.echo(json.dumps(out, indent=2) if as_json else f"{text}; {_describe(out)})")


_RELATION_NAMES = {"add_remove": "add/remove", "replace_one": "replace-one"}


def _describe(out: dict[str, Any]) -> str:
    relation = out["relation"] or ("add_remove" if out["sampling"] == "poisson" else "replace_one")
    n = f", n = {out['dataset_size']}" if out["dataset_size"] else ""
    return (
        f"{out['accountant'].upper()}, {out['sampling']} sampling q = {out['sample_rate']:g}{n}, "
        f"{out['steps']} steps, {_RELATION_NAMES[relation]} adjacency"
    )


@click.group("privacy")
def privacy_group() -> None:
    """Differential privacy: epsilon of the subsampled Gaussian mechanism, noise calibration.

    Accounting by dp-accounting (RDP by default, PLD as a cross-check); see docs/privacy.md.
    """


@privacy_group.command("epsilon")
@click.option("--noise-multiplier", type=float, required=True,
              help="sigma: noise std / sensitivity")  # fmt: skip
@_common
def epsilon_command(noise_multiplier: float, as_json: bool, **kwargs: Any) -> None:
    """Epsilon at delta after T subsampled Gaussian steps.

    Example: edgelam privacy epsilon --noise-multiplier 1.0 --sample-rate 0.01 --steps 1000
    --delta 1e-5
    """
    from edgelam.training.privacy.analysis import epsilon

    setting = _setting(kwargs)
    try:
        eps = epsilon(noise_multiplier, **setting)
    except ConfigError as err:
        raise _flagged(err) from None
    out = {"epsilon": eps, "noise_multiplier": noise_multiplier, **setting}
    text = f"epsilon = {eps:.4f} at delta = {out['delta']:g} (sigma = {noise_multiplier:g}"
    _emit(out, text, as_json)


@privacy_group.command("calibrate")
@click.option("--epsilon", "target", type=float, required=True, help="target epsilon (> 0)")
@_common
def calibrate_command(target: float, as_json: bool, **kwargs: Any) -> None:
    """The smallest noise multiplier that keeps epsilon within the target after T steps.

    Example: edgelam privacy calibrate --epsilon 3 --delta 1e-5 --sample-rate 0.01 --steps 1000
    """
    from edgelam.training.privacy.analysis import calibrate_noise, epsilon

    setting = _setting(kwargs)
    try:
        sigma = calibrate_noise(target, **setting)
        reached = epsilon(sigma, **setting)
    except ConfigError as err:
        raise _flagged(err) from None
    out = {"noise_multiplier": sigma, "epsilon": reached, "target_epsilon": target, **setting}
    text = f"noise multiplier = {sigma:.4f} (epsilon = {reached:.4f} <= {target:g} at delta = "
    _emit(out, text + f"{out['delta']:g}", as_json)
