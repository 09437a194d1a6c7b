"""vla_node: OpenVLA-7B on a native runtime (current torch/transformers, batched, fast) plus the ROS 2 node that
fuses the supplementor's visual facts into the policy prompt and publishes WidowX actions."""
