"""The SQL adapters: engines, schema, migrations, the unit of work, repositories and the outbox."""
