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
