"""What the service does by itself for each person: sequences of emails after they subscribe."""
