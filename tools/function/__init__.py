"""Function tools: the model asks, the client runs the function and submits
its output (``submit_tool_outputs``)."""
