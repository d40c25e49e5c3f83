"""The emulator's in-memory Stripe account: objects, clocks, events, and the rules Stripe applies."""

import copy
import itertools
import threading
import time

from cancel_flow.emulator import objects as build
from cancel_flow.emulator.checkout import Checkout
from cancel_flow.emulator.clocks import MAX_CUSTOMERS, MAX_SUBSCRIPTIONS, TestClocks
from cancel_flow.emulator.errors import StripeError, missing
from cancel_flow.emulator.invoices import DEFAULT_RETRIES, Invoicing
from cancel_flow.emulator.objects import public
from cancel_flow.emulator.refunds import DEFAULT_COUNTRY, Refunds

__all__ = ["Account", "StripeError", "missing"]

SUBSCRIPTION_EVENTS = ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
ENDED_STATUSES = ("canceled", "incomplete_expired")
# Which store an expandable field's id lives in.
EXPANDABLE = {
    "customer": "customers", "product": "products", "price": "prices", "coupon": "coupons",
    "discounts": "discounts", "discount": "discounts", "default_payment_method": "payment_methods",
    "payment_method": "payment_methods", "subscription": "subscriptions", "configuration": "portal_configurations",
    "latest_invoice": "invoices", "invoice": "invoices", "payment_intent": "payment_intents",
    "test_clock": "test_clocks", "default_price": "prices", "charge": "charges", "latest_charge": "charges",
}
# Stripe lets an incomplete subscription's first invoice be paid for 23 hours, then expires it
# (https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses).
INCOMPLETE_EXPIRES_AFTER = 23 * 3600
# A trial (set at creation or on an active subscription) ends at most two years ahead
# (https://docs.stripe.com/billing/subscriptions/trials#limitations: 730 days).
MAX_TRIAL_SECONDS = 730 * 86400
NO_PRORATIONS = ("Prorations are outside what the emulator computes: pass proration_behavior=none "
                 "(https://docs.stripe.com/billing/subscriptions/prorations#disable-prorations).")


class Account(Invoicing, TestClocks, Checkout, Refunds):
    """One Stripe test-mode account. Every public method runs under `lock`."""

    STORES = ("customers", "payment_methods", "products", "prices", "subscriptions", "coupons",
              "discounts", "portal_configurations", "portal_sessions", "webhook_endpoints", "events",
              "invoices", "payment_intents", "test_clocks", "checkout_sessions", "charges", "refunds", "tax_ids")

    def __init__(self):
        self.lock = threading.RLock()
        self.on_event = lambda event, endpoint: None
        self.base_url = "http://127.0.0.1:12111"  # where hosted pages are served; set from each request
        self.reset()

    def reset(self) -> None:
        for store in self.STORES:
            setattr(self, store, {})
        self.clock_offset = 0
        self.country = DEFAULT_COUNTRY  # the account's country (GET /v1/account), set with POST /_emulator/account
        self.portal_secrets: dict[str, str] = {}
        self.hosted_invoices: dict[str, str] = {}
        self.retries = {"days": list(DEFAULT_RETRIES["days"]), "then": DEFAULT_RETRIES["then"]}
        self._order = itertools.count()

    # time -----------------------------------------------------------------------------------
    def now(self) -> int:
        """The emulator's own clock, for objects on no test clock."""
        return int(time.time()) + self.clock_offset

    def advance(self, seconds: int) -> int:
        self.clock_offset += seconds
        self.run_due(None, self.now())
        return self.now()

    # lookups ---------------------------------------------------------------------------------
    def get(self, store: str, object_id, kind: str, param: str = "id") -> dict:
        if not isinstance(object_id, str) or object_id not in getattr(self, store):
            raise missing(kind, str(object_id), param)
        return getattr(self, store)[object_id]

    def render(self, store: str, obj: dict, expand: list[str] | None = None) -> dict:
        rendered = copy.deepcopy(public(obj))
        if store == "subscriptions":
            for item in rendered["items"]["data"]:
                item["price"] = copy.deepcopy(public(self.prices[item["price"]]))
            rendered["items"]["url"] = f"/v1/subscription_items?subscription={obj['id']}"
            rendered["items"]["total_count"] = len(rendered["items"]["data"])
        if store == "customers":
            # a customer's discount is shown on it while it lasts (https://docs.stripe.com/api/customers/object#customer_object-discount)
            live = self._customer_discount(obj, self.time_for(obj.get("test_clock")))
            rendered["discount"] = self.render("discounts", live) if live else None
        if store == "invoices":
            rendered["lines"]["total_count"] = len(rendered["lines"]["data"])
            if any(path == "payments" or path.startswith("payments.") for path in expand or []):
                # `payments` is included only when asked for (https://docs.stripe.com/api/invoices/object#invoice_object-payments).
                rendered["payments"] = build.list_object([copy.deepcopy(p) for p in obj.get("_payments", [])],
                                                         f"/v1/invoice_payments?invoice={obj['id']}")
        for path in expand or []:
            self._expand(rendered, path.split("."))
        return rendered

    def _expand(self, node, path: list[str]) -> None:
        if path == ["tax_ids"] and isinstance(node, dict) and node.get("object") == "customer" and node.get("id") in self.customers:
            node["tax_ids"] = self.tax_id_list(node["id"])  # included only when asked for
            return
        if not path or not isinstance(node, dict) or path[0] not in node:
            return
        key, rest = path[0], path[1:]
        value = node[key]
        store = EXPANDABLE.get(key)
        if store:
            if isinstance(value, str) and value in getattr(self, store):
                node[key] = value = self.render(store, getattr(self, store)[value])
            elif isinstance(value, list):
                node[key] = value = [
                    self.render(store, getattr(self, store)[v]) if isinstance(v, str) and v in getattr(self, store) else v
                    for v in value
                ]
        targets = value if isinstance(value, list) else [value]
        for target in targets:
            self._expand(target, rest)

    def page(self, items: list[dict], params: dict, url: str, store: str) -> dict:
        """Newest first (in the order the account made them), with limit / starting_after / ending_before."""
        items = sorted(items, key=lambda o: o.get("_seq", 0), reverse=True)
        limit = int(params.get("limit") or 10)
        if not 1 <= limit <= 100:
            raise StripeError(400, "Invalid limit: must be between 1 and 100", param="limit")
        ids = [o["id"] for o in items]
        if params.get("starting_after"):
            if params["starting_after"] not in ids:
                raise missing("object", params["starting_after"], "starting_after")
            items = items[ids.index(params["starting_after"]) + 1:]
        elif params.get("ending_before"):
            if params["ending_before"] not in ids:
                raise missing("object", params["ending_before"], "ending_before")
            items = items[:ids.index(params["ending_before"])][-limit:]
        expand = [p.removeprefix("data.") for p in params.get("expand") or [] if p.startswith("data.")]
        data = [self.render(store, o, expand) for o in items[:limit]]
        return build.list_object(data, url, has_more=len(items) > limit)

    def _stamp(self, store: str, obj: dict) -> dict:
        obj["_seq"] = next(self._order)
        getattr(self, store)[obj["id"]] = obj
        return obj

    # customers and payment methods ----------------------------------------------------------------
    def attach_payment_method(self, ref: str, customer_id: str, param: str = "customer") -> dict:
        """POST /v1/payment_methods/{pm}/attach (https://docs.stripe.com/api/payment_methods/attach). A test
        token (`pm_card_visa`, https://docs.stripe.com/testing#cards) makes a new PaymentMethod attached to the
        customer; 4000000000000002 is declined when attached, 4000000000000341 (pm_card_chargeCustomerFail)
        attaches and declines charges (https://docs.stripe.com/testing#declined-payments)."""
        self.get("customers", customer_id, "customer", param)
        if ref in self.payment_methods:
            method = self.payment_methods[ref]
            if method["customer"] not in (None, customer_id):
                raise StripeError(400, "The payment method you provided has already been attached to a customer.",
                                  code="payment_method_unexpected_state", param="payment_method")
            method["customer"] = customer_id
            return method
        if ref not in build.TEST_PAYMENT_METHODS:
            raise missing("PaymentMethod", ref, "payment_method")
        if ref in build.REFUSED_AT_ATTACH:
            raise StripeError(402, "Your card was declined.", type_="card_error", code="card_declined",
                              decline_code="generic_decline", param="payment_method")
        return self._stamp("payment_methods", build.payment_method(self.now(), ref, customer_id))

    def _attached(self, ref: str, customer_id: str, param: str) -> str:
        """A default payment method must already be attached to the customer
        (https://docs.stripe.com/api/customers/update#update_customer-invoice_settings-default_payment_method:
        "ID of a payment method that's attached to the customer"); a test token is a new, unattached one."""
        method = self.payment_methods.get(ref)
        if method is None and ref not in build.TEST_PAYMENT_METHODS:
            raise missing("PaymentMethod", ref, param)
        if method is None or method["customer"] != customer_id:
            raise StripeError(400, f"The customer does not have a payment method with the ID {ref}. The payment "
                                   "method must be attached to the customer.", code="resource_missing", param=param)
        return ref

    def create_customer(self, params: dict) -> dict:
        clock_id = params.get("test_clock")
        if clock_id:
            self.get("test_clocks", clock_id, "test_clock", "test_clock")
            on_clock = sum(1 for c in self.customers.values() if c["test_clock"] == clock_id)
            if on_clock >= MAX_CUSTOMERS:
                # https://docs.stripe.com/billing/testing/test-clocks#limitations
                raise StripeError(400, f"A test clock can have at most {MAX_CUSTOMERS} customers.", param="test_clock")
        cust = build.customer(self.time_for(clock_id), params)
        self._stamp("customers", cust)
        try:
            pm_name, pm_id = params.get("payment_method"), None
            if pm_name:
                pm_id = self.attach_payment_method(pm_name, cust["id"], "payment_method")["id"]
            default_pm = (params.get("invoice_settings") or {}).get("default_payment_method")
            if default_pm:
                # the token attached by this same request may be named as the default (Stripe's test-clock guide does:
                # https://docs.stripe.com/billing/testing/test-clocks/api-advanced-usage)
                cust["invoice_settings"]["default_payment_method"] = pm_id if default_pm == pm_name else \
                    self._attached(default_pm, cust["id"], "invoice_settings[default_payment_method]")
        except StripeError:
            del self.customers[cust["id"]]
            raise
        for entry in params.get("tax_id_data") or []:  # https://docs.stripe.com/api/customers/create#create_customer-tax_id_data
            self.add_tax_id(cust["id"], entry)
        return cust

    def update_customer(self, customer_id: str, params: dict) -> dict:
        cust = self.get("customers", customer_id, "customer")
        for field in ("email", "name", "description", "phone"):
            if field in params:
                cust[field] = params[field] or None
        if "address" in params:
            # https://docs.stripe.com/api/customers/update#update_customer-address ("" clears it)
            cust["address"] = build.address({**(cust["address"] or {}), **params["address"]}) if params["address"] else None
        if "metadata" in params:
            cust["metadata"] = _merge_metadata(cust["metadata"], params["metadata"])
        if "preferred_locales" in params:
            # https://docs.stripe.com/api/customers/update#update_customer-preferred_locales ("" clears the list)
            cust["preferred_locales"] = list(params["preferred_locales"] or [])
        if "invoice_settings" in params and "default_payment_method" in (params["invoice_settings"] or {}):
            pm = params["invoice_settings"]["default_payment_method"]
            cust["invoice_settings"]["default_payment_method"] = (
                self._attached(pm, customer_id, "invoice_settings[default_payment_method]") if pm else None)
        return cust

    def _customer_discount(self, cust: dict | None, at: int) -> dict | None:
        disc = self.discounts.get((cust or {}).get("_discount") or "")
        if disc is None or (disc["end"] is not None and at >= disc["end"]):
            return None
        return disc

    def set_customer_discount(self, customer_id: str, coupon_id: str) -> dict:
        """A customer-level discount, as customers given a coupon before 2025-03-31.basil have (the `coupon`
        parameter of customers is gone from the API since; the emulator's control stands for it). Their
        subscriptions without a discount of their own inherit it
        (https://docs.stripe.com/api/subscriptions/create#create_subscription-discounts)."""
        cust = self.get("customers", customer_id, "customer")
        coupon_obj = self.get("coupons", coupon_id, "coupon", "coupon")
        now = self.time_for(cust["test_clock"])
        end = build.add_interval(now, "month", coupon_obj["duration_in_months"]) if coupon_obj["duration"] == "repeating" else None
        disc = self._stamp("discounts", build.discount(now, coupon_obj, {"customer": customer_id, "id": None}, end))
        cust["_discount"] = disc["id"]
        coupon_obj["times_redeemed"] += 1
        return disc

    def delete_customer(self, customer_id: str) -> None:
        """Deleting a customer cancels its subscriptions at once (https://docs.stripe.com/api/customers/delete)."""
        self.get("customers", customer_id, "customer")
        for sub in list(self.subscriptions.values()):
            if sub["customer"] == customer_id and sub["status"] not in ENDED_STATUSES:
                self._end(sub, self.time_for(sub["test_clock"]), None, None, "cancellation_requested")
        del self.customers[customer_id]

    def search_customers(self, query: str) -> list[dict]:
        clauses = [c.strip() for c in query.split(" AND ")]
        matches = list(self.customers.values())
        for clause in clauses:
            field, sep, raw = clause.partition(":")
            if not sep or not (raw.startswith("'") and raw.endswith("'")) or field not in ("email", "name"):
                raise StripeError(400, f"Invalid search query: {query}. Supported here: email:'…', name:'…' joined by AND.", param="query")
            wanted = raw[1:-1].lower()
            matches = [c for c in matches if (c.get(field) or "").lower() == wanted]
        return matches

    # catalogue ----------------------------------------------------------------------------------
    def create_product(self, params: dict) -> dict:
        if not params.get("name"):
            raise StripeError(400, "Missing required param: name.", code="parameter_missing", param="name")
        return self._stamp("products", build.product(self.now(), params))

    def create_price(self, params: dict) -> dict:
        for name in ("currency",):
            if not params.get(name):
                raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        if params.get("product_data"):
            product_id = self.create_product(params["product_data"])["id"]
        elif params.get("product"):
            product_id = self.get("products", params["product"], "product", "product")["id"]
        else:
            raise StripeError(400, "Missing required param: product.", code="parameter_missing", param="product")
        if params.get("billing_scheme") == "tiered":
            # https://docs.stripe.com/api/prices/create#create_price-tiers: tiers and tiers_mode, no unit_amount
            if not params.get("tiers") or params.get("tiers_mode") not in ("graduated", "volume"):
                raise StripeError(400, "Tiered prices need tiers and tiers_mode.", code="parameter_missing", param="tiers")
        elif params.get("unit_amount") is None and params.get("unit_amount_decimal") in (None, ""):
            raise StripeError(400, "Missing required param: unit_amount.", code="parameter_missing", param="unit_amount")
        recurring = params.get("recurring")
        if recurring and recurring.get("interval") not in ("day", "week", "month", "year"):
            raise StripeError(400, "Invalid recurring[interval]", param="recurring[interval]")
        created = self._stamp("prices", build.price(self.now(), params, product_id))
        if not self.products[product_id]["default_price"]:
            self.products[product_id]["default_price"] = created["id"]
        return created

    # subscriptions ------------------------------------------------------------------------------
    def _recurring_price(self, price_id, param: str) -> dict:
        price_obj = self.get("prices", price_id, "price", param)
        if not price_obj["recurring"]:
            raise StripeError(400, "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.", param=param)
        return price_obj

    @staticmethod
    def _interval_of(price_obj: dict) -> tuple[str, int]:
        return price_obj["recurring"]["interval"], price_obj["recurring"]["interval_count"]

    def _trial_end_param(self, value, at: int, param: str = "trial_end", anchor: int | None = None) -> int:
        if value == "now":
            return at
        try:
            ts = int(value)
        except (TypeError, ValueError):
            raise StripeError(400, f"Invalid {param}: must be a Unix timestamp or `now`.", param=param) from None
        if ts <= at:
            raise StripeError(400, f"Invalid timestamp: {param} must be in the future.", param=param)
        if ts > at + MAX_TRIAL_SECONDS:
            # https://docs.stripe.com/billing/subscriptions/trials#limitations
            raise StripeError(400, f"Invalid timestamp: {param} can be no more than two years (730 days) in the future.", param=param)
        if anchor is not None and ts > build.add_interval(anchor, "year", 2):
            # "Can be at most two years from billing_cycle_anchor"
            # (https://docs.stripe.com/api/subscriptions/update#update_subscription-trial_end)
            raise StripeError(400, f"Invalid timestamp: {param} can be at most two years from the subscription's "
                                   "billing_cycle_anchor.", param=param)
        return ts

    def create_subscription(self, params: dict, idempotency_key: str | None) -> dict:
        cust = self.get("customers", params.get("customer"), "customer", "customer")
        items = params.get("items") or []
        if not items:
            raise StripeError(400, "Missing required param: items.", code="parameter_missing", param="items")
        prices = [(self._recurring_price(item.get("price"), f"items[{index}][price]"), int(item.get("quantity", 1)))
                  for index, item in enumerate(items)]
        currencies = {p["currency"] for p, _ in prices}
        intervals = {self._interval_of(p) for p, _ in prices}
        if len(currencies) > 1 or len(intervals) > 1:
            raise StripeError(400, "All prices on a subscription must have the same currency and recurring interval.", param="items")
        clock_id = cust["test_clock"]
        if clock_id and sum(1 for s in self.subscriptions.values() if s["customer"] == cust["id"]) >= MAX_SUBSCRIPTIONS:
            # https://docs.stripe.com/billing/testing/test-clocks#limitations
            raise StripeError(400, f"A customer on a test clock can have at most {MAX_SUBSCRIPTIONS} subscriptions.", param="customer")
        now = self.time_for(clock_id)
        sub = build.subscription(now, cust["id"], prices[0][0]["currency"], params, clock_id)
        pm_id = params.get("default_payment_method")
        if pm_id:
            # "It must belong to the customer associated with the subscription"
            # (https://docs.stripe.com/api/subscriptions/create#create_subscription-default_payment_method)
            sub["default_payment_method"] = self._attached(pm_id, cust["id"], "default_payment_method")
        interval, count = next(iter(intervals))
        trial_end = None
        if params.get("trial_end") not in (None, ""):
            trial_end = self._trial_end_param(params["trial_end"], now)
        elif params.get("trial_period_days"):
            days = int(params["trial_period_days"])
            if days > 730:
                raise StripeError(400, "trial_period_days can be at most 730.", param="trial_period_days")
            trial_end = now + 86400 * days
        trial = trial_end is not None and trial_end > now
        behavior = params.get("payment_behavior", "allow_incomplete")
        declines = False
        if not trial and sub["collection_method"] == "charge_automatically":
            payment_method = self._charging_method(sub, cust)
            if payment_method is None and behavior != "default_incomplete":
                raise StripeError(400, "This customer has no attached payment source or default payment method. Please consider adding a default payment method.", code="resource_missing")
            declines = bool(payment_method and payment_method["_declines"])
            if declines and behavior == "error_if_incomplete":
                # https://docs.stripe.com/api/subscriptions/create#create_subscription-payment_behavior
                raise StripeError(402, "Your card was declined.", type_="card_error", code="card_declined", decline_code="generic_decline")
        # Periods run from the billing cycle anchor: the creation, or the trial's end
        # (https://docs.stripe.com/billing/subscriptions/billing-cycle).
        if trial:
            sub["status"] = "trialing"
            sub["trial_start"], sub["trial_end"] = now, trial_end
            sub["billing_cycle_anchor"], sub["_periods"] = trial_end, 0
            period = (now, trial_end)
        else:
            sub["billing_cycle_anchor"], sub["_periods"] = now, 1
            period = (now, build.add_interval(now, interval, count))
            if declines or behavior == "default_incomplete":
                sub["status"] = "incomplete"
        sub["_interval"] = (interval, count)
        for price_obj, quantity in prices:
            sub["items"]["data"].append(build.subscription_item(now, sub["id"], price_obj, quantity, period))
        self._stamp("subscriptions", sub)
        for index, entry in enumerate(params.get("discounts") or []):
            self._attach_discount(sub, entry, index, now)
        if params.get("cancel_at_period_end"):
            self._schedule_cancel(sub, period[1], now)
            sub["cancel_at_period_end"] = True
        self.emit("customer.subscription.created", self.render("subscriptions", sub), None, idempotency_key)
        # Creating a subscription invoices its first period at once, $0 for a trial
        # (https://docs.stripe.com/billing/subscriptions/overview#subscription-lifecycle).
        self._bill(sub, "subscription_create", now, (now, now), period, trial=trial, idempotency_key=idempotency_key,
                   attempt=behavior != "default_incomplete")
        return sub

    def _charging_method(self, sub: dict | None, cust: dict | None) -> dict | None:
        pm_id = (sub or {}).get("default_payment_method") or ((cust or {}).get("invoice_settings") or {}).get("default_payment_method")
        return self.payment_methods.get(pm_id) if pm_id else None

    def _attach_discount(self, sub: dict, entry: dict, index: int, now: int) -> None:
        if entry.get("discount"):
            if entry["discount"] not in sub["discounts"]:
                raise missing("discount", entry["discount"], f"discounts[{index}][discount]")
            return
        if not entry.get("coupon"):
            raise StripeError(400, "Each discount must name a coupon or an existing discount.", param=f"discounts[{index}]")
        coupon_obj = self.get("coupons", entry["coupon"], "coupon", f"discounts[{index}][coupon]")
        if not coupon_obj["valid"]:
            raise StripeError(400, f"Coupon expired: {coupon_obj['id']}", code="coupon_expired", param=f"discounts[{index}][coupon]")
        if coupon_obj["duration"] == "repeating":
            # A repeating discount ends `duration_in_months` calendar months after it starts, the day
            # clamped to the month's end like billing periods (https://docs.stripe.com/api/discounts/object#discount_object-end).
            end = build.add_interval(now, "month", coupon_obj["duration_in_months"])
        else:
            end = None  # once / forever: `end` is null (https://docs.stripe.com/api/discounts/object#discount_object-end)
        disc = self._stamp("discounts", build.discount(now, coupon_obj, sub, end))
        sub["discounts"].append(disc["id"])
        coupon_obj["times_redeemed"] += 1
        if coupon_obj["max_redemptions"] and coupon_obj["times_redeemed"] >= coupon_obj["max_redemptions"]:
            coupon_obj["valid"] = False

    @staticmethod
    def period_end(sub: dict) -> int:
        return sub["items"]["data"][0]["current_period_end"]

    @staticmethod
    def _next_period(sub: dict) -> tuple[int, int]:
        """Renewal k ends at billing_cycle_anchor + k intervals, the day clamped to the month's end
        (anchor 31 January: 28/29 February, 31 March, 30 April; https://docs.stripe.com/billing/subscriptions/billing-cycle)."""
        interval, count = sub["_interval"]
        start = Account.period_end(sub)
        return start, build.add_interval(sub["billing_cycle_anchor"], interval, count * (sub["_periods"] + 1))

    def _schedule_cancel(self, sub: dict, at: int, now: int) -> None:
        sub["cancel_at"], sub["canceled_at"] = at, now
        sub["cancellation_details"]["reason"] = "cancellation_requested"

    def update_subscription(self, sub_id: str, params: dict, idempotency_key: str | None) -> dict:
        sub = self.get("subscriptions", sub_id, "subscription")
        now = self.time_for(sub["test_clock"])
        before = self.render("subscriptions", sub)
        if sub["status"] in ENDED_STATUSES:
            allowed = {"metadata", "cancellation_details", "expand"}
            if set(params) - allowed:
                raise StripeError(400, "A canceled subscription can only update its cancellation_details and metadata.")
        proration = params.get("proration_behavior", "create_prorations")
        bill_now = False
        if "items" in params:
            bill_now = self._change_items(sub, params["items"] or [], proration, now)
        if params.get("trial_end") not in (None, ""):
            bill_now = self._set_trial_end(sub, params["trial_end"], proration, now) or bill_now
        if "discounts" in params:
            previous = list(sub["discounts"])
            kept = {e["discount"] for e in params["discounts"] or [] if isinstance(e, dict) and e.get("discount")}
            sub["discounts"] = [d for d in previous if d in kept]
            for index, entry in enumerate(params["discounts"] or []):
                if not entry.get("discount"):
                    self._attach_discount(sub, entry, index, now)
        if "pause_collection" in params:
            pause = params["pause_collection"]
            if pause == "":
                sub["pause_collection"] = None
            else:
                if pause.get("behavior") is None:
                    raise StripeError(400, "Missing required param: pause_collection[behavior].", code="parameter_missing", param="pause_collection[behavior]")
                if pause.get("resumes_at") not in (None, "") and int(pause["resumes_at"]) <= now:
                    raise StripeError(400, "Invalid timestamp: pause_collection[resumes_at] must be in the future.", param="pause_collection[resumes_at]")
                sub["pause_collection"] = {"behavior": pause["behavior"], "resumes_at": pause.get("resumes_at") or None}
        if "cancel_at_period_end" in params:
            if params["cancel_at_period_end"]:
                self._schedule_cancel(sub, self.period_end(sub), now)
                sub["cancel_at_period_end"] = True
            else:
                sub["cancel_at_period_end"] = False
                sub["cancel_at"] = sub["canceled_at"] = None
                sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
        if "cancel_at" in params:
            at = params["cancel_at"]
            if at == "":
                sub["cancel_at"] = sub["canceled_at"] = None
                sub["cancel_at_period_end"] = False
                sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
            else:
                if at in ("max_period_end", "min_period_end", "max_billed_until"):
                    at = self.period_end(sub)
                if at <= now:
                    raise StripeError(400, "cancel_at must be in the future.", param="cancel_at")
                self._schedule_cancel(sub, at, now)
                sub["cancel_at_period_end"] = at == self.period_end(sub)
        if "cancellation_details" in params:
            details = params["cancellation_details"] or {}
            for field in ("comment", "feedback"):
                if field in details:
                    sub["cancellation_details"][field] = details[field] or None
        if "metadata" in params:
            sub["metadata"] = _merge_metadata(sub["metadata"], params["metadata"])
        if "description" in params:
            sub["description"] = params["description"] or None
        if "default_payment_method" in params:
            pm = params["default_payment_method"]
            sub["default_payment_method"] = self._attached(pm, sub["customer"], "default_payment_method") if pm else None
        self._emit_update(sub, before, idempotency_key)
        if bill_now:
            self.run_due(sub["test_clock"], now, only=sub["id"])
        return sub

    def _change_items(self, sub: dict, entries: list, proration: str, now: int) -> bool:
        """Price and quantity changes (https://docs.stripe.com/billing/subscriptions/change-price). With
        proration_behavior=none the new price is billed from the next renewal; a price with another
        interval resets the billing cycle to now and invoices at once
        (https://docs.stripe.com/billing/subscriptions/billing-cycle#changing)."""
        items = sub["items"]["data"]
        changed = False
        for index, entry in enumerate(entries):
            if entry.get("id"):
                item = next((i for i in items if i["id"] == entry["id"]), None)
                if item is None:
                    raise missing("subscription item", entry["id"], f"items[{index}][id]")
                if entry.get("deleted"):
                    items.remove(item)
                    changed = True
                    continue
            else:
                if not entry.get("price"):
                    raise StripeError(400, "Missing required param: items[{index}][price].", code="parameter_missing", param=f"items[{index}][price]")
                item = build.subscription_item(now, sub["id"], self._recurring_price(entry["price"], f"items[{index}][price]"),
                                               1, (items[0]["current_period_start"], items[0]["current_period_end"]))
                items.append(item)
                changed = True
            if entry.get("price") and entry["price"] != item["price"]:
                price_obj = self._recurring_price(entry["price"], f"items[{index}][price]")
                if price_obj["currency"] != sub["currency"]:
                    raise StripeError(400, "The price's currency must match the subscription's currency.", param=f"items[{index}][price]")
                item["price"], item["plan"] = price_obj["id"], build.plan_from_price(price_obj)
                changed = True
            if entry.get("quantity") is not None and int(entry["quantity"]) != item["quantity"]:
                item["quantity"] = int(entry["quantity"])
                changed = True
            if "metadata" in entry:
                item["metadata"] = _merge_metadata(item["metadata"], entry["metadata"])
        if not items:
            raise StripeError(400, "A subscription must keep at least one item.", param="items")
        intervals = {self._interval_of(self.prices[i["price"]]) for i in items}
        if len(intervals) > 1:
            raise StripeError(400, "All prices on a subscription must have the same currency and recurring interval.", param="items")
        if changed and proration != "none":
            raise StripeError(400, NO_PRORATIONS, param="proration_behavior")
        interval = next(iter(intervals))
        if interval == sub["_interval"]:
            return False
        if sub["status"] == "trialing":
            sub["_interval"] = interval
            return False
        sub["_interval"], sub["_reset"] = interval, True
        sub["billing_cycle_anchor"], sub["_periods"] = now, 0
        for item in items:
            item["current_period_end"] = now
        return True

    def _set_trial_end(self, sub: dict, value, proration: str, now: int) -> bool:
        """`trial_end` on a subscription (https://docs.stripe.com/billing/subscriptions/trials#extend-trials
        and /billing/subscriptions/billing-cycle#using-a-trial-to-change-the-billing-cycle): status trialing
        until then, the current period ends at trial_end, nothing billed until trial_end."""
        ts = self._trial_end_param(value, now, anchor=sub["billing_cycle_anchor"])
        if sub["status"] not in ("active", "trialing"):
            raise StripeError(400, f"A trial can't be set on a subscription with status {sub['status']}.", param="trial_end")
        if ts == now:
            if sub["status"] != "trialing":
                return False
            sub["trial_end"] = now
            sub["billing_cycle_anchor"], sub["_periods"] = now, 0
            for item in sub["items"]["data"]:
                item["current_period_end"] = now
            return True
        if proration != "none":
            raise StripeError(400, NO_PRORATIONS, param="proration_behavior")
        if sub["status"] != "trialing":
            sub["trial_start"] = now
        sub["status"] = "trialing"
        sub["trial_end"] = ts
        sub["billing_cycle_anchor"], sub["_periods"] = ts, 0
        for item in sub["items"]["data"]:
            item["current_period_end"] = ts
        if sub["cancel_at_period_end"]:
            sub["cancel_at"] = ts
        return False

    def _emit_update(self, sub: dict, before: dict, idempotency_key: str | None, at: int | None = None) -> None:
        after = self.render("subscriptions", sub)
        previous = {key: before[key] for key in after if before.get(key) != after[key]}
        if previous:
            self.emit("customer.subscription.updated", after, previous, idempotency_key, at=at)

    def cancel_subscription(self, sub_id: str, params: dict, idempotency_key: str | None) -> dict:
        sub = self.get("subscriptions", sub_id, "subscription")
        if sub["status"] == "canceled":
            raise StripeError(400, f"This subscription has already been canceled: {sub_id}", code="resource_missing")
        details = params.get("cancellation_details") or {}
        self._end(sub, self.time_for(sub["test_clock"]), details.get("feedback"), details.get("comment"), "cancellation_requested", idempotency_key)
        return sub

    def _end(self, sub: dict, at: int, feedback, comment, reason: str, idempotency_key: str | None = None) -> None:
        # An ended subscription's open invoices are no longer retried (not documented by Stripe; chosen because
        # nothing is left to collect for).
        for inv in self._retrying(sub):
            inv["next_payment_attempt"] = None
        before = self.render("subscriptions", sub)
        sub["status"] = "canceled"
        sub["ended_at"] = at
        sub["canceled_at"] = sub["canceled_at"] or at
        details = sub["cancellation_details"]
        details["reason"] = details["reason"] or reason
        if feedback:
            details["feedback"] = feedback
        if comment:
            details["comment"] = comment
        after = self.render("subscriptions", sub)
        previous = {key: before[key] for key in after if before.get(key) != after[key]}
        self.emit("customer.subscription.deleted", after, previous, idempotency_key, at=at)

    def list_subscriptions(self, params: dict) -> list[dict]:
        status = params.get("status")
        subs = list(self.subscriptions.values())
        if params.get("customer"):
            subs = [s for s in subs if s["customer"] == params["customer"]]
        if params.get("price"):
            subs = [s for s in subs if any(i["price"] == params["price"] for i in s["items"]["data"])]
        if params.get("test_clock"):
            subs = [s for s in subs if s["test_clock"] == params["test_clock"]]
        if status in (None, ""):
            subs = [s for s in subs if s["status"] not in ENDED_STATUSES]
        elif status == "ended":
            subs = [s for s in subs if s["status"] in ENDED_STATUSES]
        elif status != "all":
            subs = [s for s in subs if s["status"] == status]
        return subs

    # what falls due when a clock moves ------------------------------------------------------------
    def run_due(self, clock_id: str | None, until: int, only: str | None = None) -> None:
        """Everything that falls due up to `until` for subscriptions on that clock (None: the emulator's
        own), in time order per subscription."""
        for sub in list(self.subscriptions.values()):
            if sub["test_clock"] != clock_id or (only and sub["id"] != only):
                continue
            while sub["id"] in self.subscriptions:
                due = self._next_due(sub)
                if due is None or due[0] > until:
                    break
                self._apply_due(sub, *due)
        self.expire_due_checkouts(clock_id, until)

    def _next_due(self, sub: dict):
        """(moment, rank, what, detail) of the subscription's next scheduled change. At one moment a
        cancellation comes first, then a pause's end (a renewal at or after resumes_at is charged),
        then discount ends (an invoice made at a discount's end is not discounted), then renewals."""
        status = sub["status"]
        if status in ENDED_STATUSES:
            return None
        if status == "incomplete":
            return (sub["created"] + INCOMPLETE_EXPIRES_AFTER, 0, "expire", None)
        moments = [(self.period_end(sub), 4, "renew", None)]
        if sub["cancel_at"]:
            moments.append((sub["cancel_at"], 0, "cancel", None))
        pause = sub["pause_collection"]
        if pause and pause.get("resumes_at"):
            moments.append((pause["resumes_at"], 1, "resume", None))
        moments += [(self.discounts[d]["end"], 2, "discount_end", d) for d in sub["discounts"] if self.discounts[d]["end"]]
        moments += [(inv["automatically_finalizes_at"], 3, "finalize", inv["id"]) for inv in self._drafts(sub)]
        moments += [(inv["next_payment_attempt"], 3, "retry", inv["id"]) for inv in self._retrying(sub)]
        return min(moments)

    def _drafts(self, sub: dict) -> list[dict]:
        """The subscription's draft invoices waiting for their automatic finalization."""
        pending = [self.invoices[i] for i in sub.get("_drafts", []) if i in self.invoices]
        sub["_drafts"] = [inv["id"] for inv in pending if inv["status"] == "draft" and inv["automatically_finalizes_at"]]
        return [self.invoices[i] for i in sub["_drafts"]]

    def _apply_due(self, sub: dict, at: int, rank: int, what: str, detail) -> None:
        before = self.render("subscriptions", sub)
        if what == "cancel":
            self._end(sub, sub["cancel_at"], None, None, "cancellation_requested")
            return
        if what == "expire":
            # https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses
            sub["status"] = "incomplete_expired"
            sub["ended_at"] = at
            latest = self.invoices.get(sub["latest_invoice"])
            if latest and latest["status"] == "open":
                self._void(latest, at)
        elif what == "resume":
            # https://docs.stripe.com/billing/subscriptions/pause-payment#resuming-payment-collection
            sub["pause_collection"] = None
        elif what == "discount_end":
            sub["discounts"] = [d for d in sub["discounts"] if d != detail]
            self.emit("customer.discount.deleted", self.render("discounts", self.discounts[detail]), None, None, at=at)
        elif what == "finalize":
            self.finalize_due(self.invoices[detail], at)
            return
        elif what == "retry":
            self.retry_due(self.invoices[detail], at)
            return
        else:
            self._renew(sub, at)
            return
        self._emit_update(sub, before, None, at=at)

    def _renew(self, sub: dict, at: int) -> None:
        """A new period starts and is invoiced (https://docs.stripe.com/billing/subscriptions/overview#recurring-charges);
        the invoice's period_start/end look back on the period that just ended
        (https://docs.stripe.com/api/invoices/object#invoice_object-period_start)."""
        before = self.render("subscriptions", sub)
        start, end = self._next_period(sub)
        previous_start = sub["items"]["data"][0]["current_period_start"]
        sub["_periods"] += 1
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = start, end
        reason = "subscription_cycle"
        if sub["status"] == "trialing":
            sub["status"] = "active"  # https://docs.stripe.com/billing/subscriptions/trials#how-trials-work
        elif sub.pop("_reset", False):
            reason = "subscription_update"  # the billing cycle was reset by a change of interval
        self._emit_update(sub, before, None, at=at)
        if reason == "subscription_update":
            self._bill(sub, reason, at, (at, at), (start, end))
        else:
            self._bill(sub, reason, at, (previous_start, start), (start, end))

    # coupons, portal, webhooks ---------------------------------------------------------------------
    def create_coupon(self, params: dict) -> dict:
        if params.get("id") and params["id"] in self.coupons:
            raise StripeError(400, "Coupon already exists.", code="resource_already_exists", param="id")
        if (params.get("percent_off") is None) == (params.get("amount_off") is None):
            raise StripeError(400, "You must pass exactly one of percent_off or amount_off.", param="percent_off")
        if params.get("amount_off") is not None and not params.get("currency"):
            raise StripeError(400, "You must pass currency when passing amount_off.", code="parameter_missing", param="currency")
        if params.get("percent_off") is not None and not 0 < params["percent_off"] <= 100:
            raise StripeError(400, "Invalid percent_off: must be greater than 0 and at most 100.", param="percent_off")
        duration = params.get("duration", "once")
        if duration == "repeating" and not params.get("duration_in_months"):
            raise StripeError(400, "You must pass duration_in_months when duration is repeating.", code="parameter_missing", param="duration_in_months")
        if duration != "repeating" and params.get("duration_in_months"):
            raise StripeError(400, "duration_in_months is only valid when duration is repeating.", param="duration_in_months")
        return self._stamp("coupons", build.coupon(self.now(), params))

    def default_portal_configuration(self) -> dict:
        """The account's default configuration: the one managed in Stripe's Dashboard ("If true, this configuration
        can be managed in the Dashboard and portal sessions will use this configuration unless it is overriden",
        https://docs.stripe.com/api/customer_portal/configurations/object#portal_configuration_object-is_default);
        configurations made through the API are never it. Stripe refuses test-mode portal sessions until the
        Dashboard's settings are saved (https://docs.stripe.com/customer-management/activate-no-code-customer-portal)."""
        for config in self.portal_configurations.values():
            if config["is_default"]:
                return config
        raise StripeError(400, "You can't create a portal session in test mode until you save your customer portal "
                               "settings in test mode at https://dashboard.stripe.com/test/settings/billing/portal.")

    def create_portal_configuration(self, params: dict) -> dict:
        return self._stamp("portal_configurations", build.portal_configuration(self.now(), params, is_default=False))

    def save_dashboard_portal_settings(self, params: dict) -> dict:
        """The customer portal settings saved in Stripe's Dashboard: the account's default configuration."""
        for config in self.portal_configurations.values():
            if config["is_default"]:
                return self.update_portal_configuration(config["id"], params)
        return self._stamp("portal_configurations", build.portal_configuration(self.now(), params, is_default=True))

    def update_portal_configuration(self, config_id: str, params: dict) -> dict:
        config = self.get("portal_configurations", config_id, "configuration")
        merged = build.portal_configuration(self.now(), _deep_merge(_config_as_params(config), params), config["is_default"])
        merged["id"], merged["created"] = config["id"], config["created"]
        if "active" in params:
            merged["active"] = params["active"]
        merged["_seq"] = config["_seq"]
        self.portal_configurations[config_id] = merged
        return merged

    def create_portal_session(self, params: dict, base_url: str) -> dict:
        cust = self.get("customers", params.get("customer"), "customer", "customer")
        if params.get("configuration"):
            config = self.get("portal_configurations", params["configuration"], "configuration", "configuration")
            if not config["active"]:
                raise StripeError(400, "This configuration is not active.", param="configuration")
        else:
            config = self.default_portal_configuration()
        flow = params.get("flow_data")
        if flow:
            kind = flow["type"]
            if kind == "subscription_cancel":
                details = flow.get("subscription_cancel") or {}
                sub = self.get("subscriptions", details.get("subscription"), "subscription", "flow_data[subscription_cancel][subscription]")
                if sub["customer"] != cust["id"]:
                    raise StripeError(400, "The subscription does not belong to this customer.", param="flow_data[subscription_cancel][subscription]")
                if sub["status"] == "canceled":
                    raise StripeError(400, "You can't create a portal session to cancel a subscription that is already canceled.", param="flow_data[subscription_cancel][subscription]")
                if sub["cancel_at_period_end"] or sub["cancel_at"]:
                    # Stripe refuses a cancel flow for a subscription already set to cancel
                    # (https://docs.stripe.com/customer-management/portal-deep-links#flow-types; the message
                    # as Stripe answers it, see ../shared/notes/stripe.md).
                    raise StripeError(400, f"The subscription {sub['id']} is already set to be canceled at period end.",
                                      param="flow_data[subscription_cancel][subscription]")
                if not config["features"]["subscription_cancel"]["enabled"]:
                    raise StripeError(400, "Subscription cancellation is not enabled in this portal configuration.", param="flow_data[type]")
                retention = details.get("retention")
                if retention:
                    self.get("coupons", (retention.get("coupon_offer") or {}).get("coupon"), "coupon", "flow_data[subscription_cancel][retention][coupon_offer][coupon]")
            elif kind == "payment_method_update":
                if not config["features"]["payment_method_update"]["enabled"]:
                    raise StripeError(400, "Payment method update is not enabled in this portal configuration.", param="flow_data[type]")
            else:
                raise StripeError(400, f"The emulator does not offer the {kind} flow.", param="flow_data[type]")
            after = flow.get("after_completion") or {}
            if after.get("type") == "redirect" and not (after.get("redirect") or {}).get("return_url"):
                raise StripeError(400, "Missing required param: flow_data[after_completion][redirect][return_url].", code="parameter_missing", param="flow_data[after_completion][redirect][return_url]")
        secret = build.new_id("ses", 32)
        session = build.portal_session(self.now(), params, config["id"], f"{base_url}/p/session/{secret}")
        session["_secret"], session["_used"] = secret, False
        self.portal_secrets[secret] = session["id"]
        return self._stamp("portal_sessions", session)

    def create_webhook_endpoint(self, params: dict) -> dict:
        for name in ("url", "enabled_events"):
            if not params.get(name):
                raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return self._stamp("webhook_endpoints", build.webhook_endpoint(self.now(), params))

    def emit(self, event_type: str, data_object: dict, previous: dict | None, idempotency_key: str | None,
             at: int | None = None) -> dict:
        """Record an event and hand it to every endpoint that listens for it. `created` is when it happened:
        on a test clock, the clock's time (https://docs.stripe.com/billing/testing/test-clocks)."""
        if at is None:
            clock = data_object.get("test_clock")
            at = self.time_for(clock if isinstance(clock, str) else (clock or {}).get("id"))
        evt = self._stamp("events", build.event(at, event_type, data_object, previous, idempotency_key))
        for endpoint in self.webhook_endpoints.values():
            if endpoint["status"] == "enabled" and ("*" in endpoint["enabled_events"] or event_type in endpoint["enabled_events"]):
                evt["pending_webhooks"] += 1
                self.on_event(evt, endpoint)
        return evt


def _merge_metadata(current: dict, update) -> dict:
    if update == "":
        return {}
    merged = dict(current)
    for key, value in (update or {}).items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _deep_merge(merged.get(key) or {}, value) if isinstance(value, dict) else value
    return merged


def _config_as_params(config: dict) -> dict:
    features = config["features"]
    return {
        "business_profile": {"headline": config["business_profile"]["headline"]},
        "default_return_url": config["default_return_url"],
        "metadata": config["metadata"], "name": config["name"],
        "features": {
            "invoice_history": {"enabled": features["invoice_history"]["enabled"]},
            "payment_method_update": {"enabled": features["payment_method_update"]["enabled"]},
            "subscription_cancel": {
                "enabled": features["subscription_cancel"]["enabled"],
                "mode": features["subscription_cancel"]["mode"],
                "proration_behavior": features["subscription_cancel"]["proration_behavior"],
                "cancellation_reason": dict(features["subscription_cancel"]["cancellation_reason"]),
            },
        },
    }
