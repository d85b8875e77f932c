"""Who may do what: admin users and their sessions, API tokens, and the rate limits every process shares."""
