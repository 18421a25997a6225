"""What runs the frozen backbone for cached features (``training.features.runtime``).

``torch`` is eager PyTorch (the model itself); :mod:`.onnx_graph` runs its exported, checked
ONNX graph; :mod:`.bf16` runs PyTorch under bfloat16 autocast on CPUs that have it. Each is part
of the feature cache key: runtimes never share entries.
"""

#: Runtimes that may compute backbone features (``training.features.runtime``).
FEATURE_RUNTIMES = ("torch", "onnxruntime", "torch_bf16")
