"""postsave's benchmark: every contender on the same PostgreSQL, RabbitMQ and event stream.

`python -m bench --quick` (a CI smoke test, no timing assertions) or `--full` (`make bench`).
Each run makes its own databases and RabbitMQ vhost and drops them at the end."""
