"""Domain logic: users, sessions, payments. Never imports GraphQL or Starlette."""
