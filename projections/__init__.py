"""Read models in Postgres, built from the event streams."""
