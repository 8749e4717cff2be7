"""Named readings of the MRE method.

Each entry answers every open question of the method (see `Reading`). The
reasons for each choice and the measurements behind the default are in
`paper/INTERPRETATION.md`.
"""

from __future__ import annotations

from dataclasses import replace

from mre_repro.config import ConfigError, Reading

DEFAULT_READING = "poisson-window"

_BASE = Reading(name=DEFAULT_READING)

READINGS: dict[str, Reading] = {
    reading.name: reading
    for reading in (
        # Default: independent Poisson clocks per expert, router and experts
        # read the running state, the output layer reads expert outputs only.
        _BASE,
        # One expert or "stop" per step: the race of Poisson clocks, N_e + 1 outcomes.
        replace(_BASE, name="categorical-stop", activation="categorical", allow_stop=True),
        # One expert per step, every step runs: fixed depth, width 1.
        replace(_BASE, name="categorical-no-stop", activation="categorical", allow_stop=False),
        # A separate pool of N_e experts per step, one expert chosen per step.
        replace(_BASE, name="layered", activation="categorical", allow_stop=False, expert_pool="per-step"),
        # The router reads [input embedding, last output of each expert]: N_e + 1
        # blocks, the reading that would explain the sqrt(N_e + 1) init scale.
        replace(_BASE, name="concat-router", router_input="concat"),
        # The output layer also reads the input embedding. This reading is known to collapse.
        replace(_BASE, name="output-sees-embedding", output_input="experts+embedding"),
        # Several sampled paths per input during training, averaged.
        replace(_BASE, name="multi-ray", activation="categorical", allow_stop=True, rays=4),
        # Loss on the last step only instead of the mean over steps.
        replace(_BASE, name="last-step-loss", step_loss="last"),
        # Gumbel temperature annealed from 1.0 to 0.3 over training.
        replace(_BASE, name="annealed", temperature_schedule="anneal", temperature_final=0.3),
    )
}


def get_reading(name: str) -> Reading:
    try:
        return READINGS[name]
    except KeyError:
        raise ConfigError(f"unknown reading {name!r}: choose one of {', '.join(READINGS)}") from None
