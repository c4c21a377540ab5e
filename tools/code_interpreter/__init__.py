"""code_interpreter: model-written Python in a hardened Docker sandbox
(code-interpreter issue)."""
