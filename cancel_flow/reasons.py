"""Why subscribers leave: Stripe's `cancellation_details.feedback` values, in the words the page shows (marked
for the catalogs: each language's page shows its own words, cancel_flow/web/pages.py `reason_words`)."""

from cancel_flow.i18n import N_

REASONS = {
    "too_expensive": N_("It's too expensive"),
    "missing_features": N_("Some features are missing"),
    "switched_service": N_("I'm switching to a different service"),
    "unused": N_("I don't use it enough"),
    "customer_service": N_("Customer service was less than expected"),
    "too_complex": N_("It's too complicated"),
    "low_quality": N_("Quality was less than expected"),
    "other": N_("Another reason"),
}
