"""A separate process that publishes one VisualFacts and one WidowXAction once a subscriber is discovered.

Run by tests/test_messages_dds.py so that the messages cross a real process boundary over DDS.
"""

import sys
import time

import rclpy
from geometry_msgs.msg import Vector3
from std_msgs.msg import Header
from task_supplementor_msgs.msg import VisualFacts, WidowXAction

from task_supplementor.facts import evaluate_output
from task_supplementor.ros.convert import facts_outcome_to_msg

RAW = ('{"objects": [{"name": "red block", "attributes": ["wooden"], "region": "top-left"}], '
       '"relations": [], "gripper": {"state": "closed", "holding": "red block"}}')


def main() -> int:
    rclpy.init()
    node = rclpy.create_node("message_peer")
    facts_pub = node.create_publisher(VisualFacts, "/test/facts", 10)
    action_pub = node.create_publisher(WidowXAction, "/test/action", 10)
    deadline = time.monotonic() + 20.0
    while facts_pub.get_subscription_count() == 0 or action_pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            print("no subscriber discovered", file=sys.stderr)
            return 1
        time.sleep(0.05)
    header = Header(frame_id="camera_0")
    header.stamp.sec, header.stamp.nanosec = 1234, 5678
    facts = facts_outcome_to_msg(evaluate_output(RAW, "stack the blocks"), header=header, task="stack the blocks",
                                 model_id="peer-model", latency_s=0.25)
    action = WidowXAction(header=header, delta_xyz=Vector3(x=0.01, y=-0.02, z=0.03),
                          delta_rpy=Vector3(x=0.1, y=-0.1, z=0.2), gripper=1.0,
                          raw=[0.01, -0.02, 0.03, 0.1, -0.1, 0.2, 1.0], clipped=False, dry_run=True,
                          prompt_mode="supplement", policy_id="peer-policy", facts_age_s=0.4, latency_s=0.05)
    for _ in range(50):  # repeat until the test process says it has both (it exits us), at most ~5 s
        facts_pub.publish(facts)
        action_pub.publish(action)
        time.sleep(0.1)
    node.destroy_node()
    rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
