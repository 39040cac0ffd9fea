"""Real-data traces: benchmark loaders and checkers, real-model trace collection, ProcessBench import.

`benchmarks` and `processbench` need only NumPy; `collector`'s Hugging Face backend needs the optional
`collect` extra (torch, transformers), imported lazily.
"""
