"""Services several middleware share, each in one place: the MiniLM embedder (``embedder``), Chroma
(``chroma``) and Redis (``redis_pool``). The first two are heavy to import, so this package imports none of
them: import the module you use."""
