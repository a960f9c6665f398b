"""HTTP plumbing shared by every route: services and dependencies, body reading and limits,
rate and concurrency limits, and the mapping of errors to answers."""
