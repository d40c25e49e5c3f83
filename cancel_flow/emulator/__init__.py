"""A local, stateful Stripe emulator that the official SDK talks to unchanged."""
