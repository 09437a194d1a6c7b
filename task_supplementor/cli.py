"""The ``task-supplementor`` command: one entry point, one module per sub-command.

Each sub-command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their command is chosen, so ``task-supplementor check-facts`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help). Keep sorted by pipeline order.
COMMANDS: dict[str, tuple[str, str]] = {
    "check-facts": ("task_supplementor.check_facts", "validate a JSON-lines file of supplementor outputs (E1)"),
    "make-tiny-models": ("supplementor_node.make_tiny_models",
                         "write the tiny random-weight model checkpoints (tests, demo)"),
    "make-synthetic-bridge": ("offline.synthetic_bridge",
                              "write a small synthetic BridgeData v2 TFDS dataset (tests, demo)"),
    "convert": ("offline.convert", "convert BridgeData v2 (TFDS/RLDS) episodes to rosbag2, one bag per episode"),
    "inspect": ("offline.inspect_bag", "summarise a rosbag2 (topics, counts, tasks) and draw a contact sheet"),
    "replay": ("offline.replay", "publish bags into the live graph (real time or lockstep) and record the outputs"),
    "up": ("task_supplementor.up", "start both nodes as processes with config/*.yaml (no ros2 launch needed)"),
    "demo": ("task_supplementor.demo", "the main job end to end on synthetic BridgeData v2 and tiny models"),
    "bench": ("task_supplementor.bench",
              "benchmarks: bench supplementor | vla | offline (tables -> docs/benchmarks.md)"),
}


def _build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="task-supplementor",
        description="task_supplementor: visual facts for VLA policies on ROS 2 (nodes, BridgeData v2 bags, replay, "
                    "benchmarks)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(sub_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = _build_parser(command if command in COMMANDS else None)
    parser.set_defaults(argv=argv)  # what a run records as its command (benchmarks), whoever called main()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
