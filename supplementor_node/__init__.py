"""supplementor_node: Qwen2.5-VL turns a camera frame + task text into validated structured visual facts.

Modules: ``tiny_model`` (random-weight checkpoints in the official layout), ``qwen_inputs`` (chat prompt + image ->
model inputs), ``backends`` (transformers / vLLM), ``describer`` (prompt spec -> backend -> facts contract),
``node`` (the ROS 2 node), ``bench`` (speed measurements).
"""
