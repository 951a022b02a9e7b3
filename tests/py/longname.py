"""A module with a function name over 63 bytes."""
FUNCTIONS = {"x" * 64: lambda state, job: b""}
