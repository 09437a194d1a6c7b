"""task_supplementor: the code shared by both nodes and the offline pipeline.

- ``task_supplementor.facts``: the one contract for "structured visual facts" (schema, parser, validator, renderer).
- ``task_supplementor.ros``: ROS 2 glue used by both nodes (message conversions, QoS, images, model swap).
- ``task_supplementor.cli``: the ``task-supplementor`` command.

The nodes live in ``supplementor_node`` and ``vla_node``; the experiment pipeline in ``offline``.
"""

__version__ = "0.1.0"
