"""The `postsave` command line: one module per command group."""
