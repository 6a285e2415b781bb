"""The outbox table through SQLAlchemy Core, one adapter per port: the unit of work appends
(`writer`), the relay claims and leases (`relay_queue`), a delivery applies and records
failures (`delivery_ledger`), an operator watches and revives (`monitor`), verify and rebuild
sum the log (`projection_log`), a prune folds and deletes (`retention`)."""
