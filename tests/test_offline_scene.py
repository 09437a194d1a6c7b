"""Synthetic episodes (``offline.scene``) have exactly the length asked for.

WHY: ``make-synthetic-bridge --min-steps/--max-steps`` promise the step range; tests that need an episode of a
given length (bridge_orig drops two steps, contact sheets sample frames) rely on it.
"""

from __future__ import annotations

import pytest

from offline.scene import render_episode


@pytest.mark.parametrize("episode", range(6))
def test_rendered_episodes_have_the_asked_number_of_steps(episode):
    for steps in range(16, 41):
        rendered = render_episode(0, episode, steps, ("image_0",))
        assert len(rendered.states) == len(rendered.actions) == len(rendered.images["image_0"]) == steps, \
            f"episode {episode}: asked {steps} steps"


def test_too_few_steps_for_a_pick_and_place_is_refused():
    with pytest.raises(ValueError, match="at least 13 steps"):
        render_episode(0, 0, 12, ("image_0",))
