"""The request middleware, one module each. The order they run in is the list in ``proxy.app``."""
