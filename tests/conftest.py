"""Shared pytest setup.

Every test run gets its own ROS_DOMAIN_ID (so parallel runs on one machine never cross-talk) and keeps DDS
discovery on this host. Child processes started by tests inherit both through the environment.
"""

from __future__ import annotations

import os
import random

os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """Every tiny random-weight checkpoint (official on-disk layouts), built once per test session.

    Returns the directory that holds one sub-directory per checkpoint (names from ``TINY_MAKERS``).
    """
    from supplementor_node.make_tiny_models import TINY_MAKERS, ensure_tiny_models

    out = tmp_path_factory.mktemp("tiny_models")
    ensure_tiny_models(out, list(TINY_MAKERS))
    return out
