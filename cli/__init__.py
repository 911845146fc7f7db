"""The `synthgen` command line: thin click commands over the library's `run_*` functions."""
