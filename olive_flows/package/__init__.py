"""Step 5: assemble the multi-adapter ONNX package of each target, with its manifest."""
