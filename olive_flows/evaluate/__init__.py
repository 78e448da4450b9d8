"""Step 6: evaluate a package with onnxruntime-genai: smoke test and task metrics."""
