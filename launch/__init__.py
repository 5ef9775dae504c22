"""absl entry points (``python -m launch.<name>``); each stays short and calls the library."""
