"""A stand-in for llama-cpp-python, found first on the path of the Fluido processes that tests start with it.

Only ``python -m llama_cpp.server`` exists here: see ``llama_cpp/server.py``.
"""
