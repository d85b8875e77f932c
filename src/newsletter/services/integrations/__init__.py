"""What the service tells other systems: the event record and the signed webhooks that carry it."""
