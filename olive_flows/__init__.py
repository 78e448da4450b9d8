"""olive-flows: declarative fine-tuning and multi-adapter ONNX export on top of Microsoft Olive."""

__version__ = "0.1.0"
