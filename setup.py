"""ament_python packaging for task_supplementor; also installs with plain pip (``pip install -e .``).

The ROS executables (``ros2 run task_supplementor <node>``) are console scripts installed into
``lib/task_supplementor`` by setup.cfg; ``task-supplementor`` is the command-line front end for everything else.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "task_supplementor"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "supplementor_node", "supplementor_node.*",
                                    "vla_node", "vla_node.*", "offline", "offline.*"]),
    package_data={PACKAGE: ["facts/prompts/*.txt", "facts/prompts/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="task_supplementor maintainers",
    maintainer_email="maintainers@task-supplementor.invalid",
    description="Structured visual facts for VLA policies on ROS 2 robots (Qwen2.5-VL + OpenVLA, BridgeData v2).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "task-supplementor = task_supplementor.cli:main",
            "supplementor_node = supplementor_node.node:main",
            "vla_node = vla_node.node:main",
        ],
    },
)
