"""The HTTP service: the app and its wire shapes, the scheduler, keys, limits, metrics and the page."""
