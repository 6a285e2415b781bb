"""postsave's domain: foos, bars, their events and the use cases. Standard library only."""
