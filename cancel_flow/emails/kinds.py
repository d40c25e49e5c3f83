"""The billing emails' kinds (their schedule is the configuration's `[emails]`: cancel_flow/config), and win-back's
(`[winback]`)."""

KINDS = ("payment_failed", "renewal_reminder", "discount_ending", "offer_accepted", "cancellation_confirmed")
# Win-back's emails: "changed your mind?" before a scheduled cancellation ends, and the comeback steps after it.
WINBACK_KINDS = ("changed_mind", "winback")
# Failed-payment notices are about the account itself: they have no unsubscribe link.
UNSUBSCRIBABLE = ("renewal_reminder", "discount_ending", "offer_accepted", "cancellation_confirmed", *WINBACK_KINDS)
