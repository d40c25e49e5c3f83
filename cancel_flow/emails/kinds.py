"""The billing emails' kinds (their schedule is the configuration's `[emails]`: cancel_flow/config)."""

KINDS = ("payment_failed", "renewal_reminder", "discount_ending", "offer_accepted", "cancellation_confirmed")
# Failed-payment notices are about the account itself: they have no unsubscribe link.
UNSUBSCRIBABLE = ("renewal_reminder", "discount_ending", "offer_accepted", "cancellation_confirmed")
