"""Why subscribers leave: Stripe's `cancellation_details.feedback` values, in the words the page shows."""

REASONS = {
    "too_expensive": "It's too expensive",
    "missing_features": "Some features are missing",
    "switched_service": "I'm switching to a different service",
    "unused": "I don't use it enough",
    "customer_service": "Customer service was less than expected",
    "too_complex": "It's too complicated",
    "low_quality": "Quality was less than expected",
    "other": "Another reason",
}
