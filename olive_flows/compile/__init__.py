"""Step 3: compile a validated recipe into Olive workflow configs."""
