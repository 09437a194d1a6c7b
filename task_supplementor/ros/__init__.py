"""ROS 2 glue shared by both nodes: message conversions, QoS profiles, image conversion, model hot-swap."""
