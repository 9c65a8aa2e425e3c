"""The local backend's side of llama.cpp's server engine: requests in its terms
(:mod:`.request`), its stream as Ollama records (:mod:`.records`), the HTTP client of one
runner (:mod:`.client`), and Ollama's endpoints on top (:mod:`.ollama`)."""
