"""The runner program: llama.cpp's server engine for one model (``-m modelgarden.runner``)."""
