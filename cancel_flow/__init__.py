"""cancel-flow: a self-hosted retention flow between a subscriber's Cancel click and Stripe."""
