"""Services several middleware share, each in one place: the MiniLM embedder (``embedder``) and Chroma
(``chroma``). Both are heavy to import, so this package imports neither: import the module you use."""
