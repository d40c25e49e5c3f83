"""The emulator's in-memory Stripe account: objects, clock, events, and the rules Stripe applies."""

import copy
import threading
import time

from cancel_flow.emulator import objects as build
from cancel_flow.emulator.objects import public

SUBSCRIPTION_EVENTS = ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
LIVE_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")
# Which store an expandable field's id lives in.
EXPANDABLE = {
    "customer": "customers", "product": "products", "price": "prices", "coupon": "coupons",
    "discounts": "discounts", "default_payment_method": "payment_methods",
    "subscription": "subscriptions", "configuration": "portal_configurations",
}


class StripeError(Exception):
    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, decline_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param
        self.decline_code = decline_code

    def body(self) -> dict:
        error = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        if self.decline_code:
            error["decline_code"] = self.decline_code
        return {"error": error}


def missing(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


class Account:
    """One Stripe test-mode account. Every public method runs under `lock`."""

    STORES = ("customers", "payment_methods", "products", "prices", "subscriptions", "coupons",
              "discounts", "portal_configurations", "portal_sessions", "webhook_endpoints", "events")

    def __init__(self):
        self.lock = threading.RLock()
        self.on_event = lambda event, endpoint: None
        self.reset()

    def reset(self) -> None:
        for store in self.STORES:
            setattr(self, store, {})
        self.clock_offset = 0
        self.portal_secrets: dict[str, str] = {}

    # time -----------------------------------------------------------------------------------
    def now(self) -> int:
        return int(time.time()) + self.clock_offset

    def advance(self, seconds: int) -> int:
        self.clock_offset += seconds
        self.run_due()
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
        for path in expand or []:
            self._expand(rendered, path.split("."))
        return rendered

    def _expand(self, node, path: list[str]) -> None:
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
        """Newest first, with limit / starting_after / ending_before as Stripe pages lists."""
        items = sorted(items, key=lambda o: (o.get("created", 0), o.get("_seq", 0)), reverse=True)
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
        obj["_seq"] = len(getattr(self, store))
        getattr(self, store)[obj["id"]] = obj
        return obj

    # customers and payment methods ----------------------------------------------------------------
    def _payment_method_for(self, test_name: str, customer_id: str | None, param: str) -> str:
        if test_name in self.payment_methods:
            return test_name
        if test_name not in build.TEST_PAYMENT_METHODS:
            raise missing("PaymentMethod", test_name, param)
        return self._stamp("payment_methods", build.payment_method(self.now(), test_name, customer_id))["id"]

    def create_customer(self, params: dict) -> dict:
        cust = build.customer(self.now(), params)
        pm_name, pm_id = params.get("payment_method"), None
        if pm_name:
            pm_id = self._payment_method_for(pm_name, cust["id"], "payment_method")
            self.payment_methods[pm_id]["customer"] = cust["id"]
        default_pm = (params.get("invoice_settings") or {}).get("default_payment_method")
        if default_pm:
            cust["invoice_settings"]["default_payment_method"] = pm_id if default_pm == pm_name else \
                self._payment_method_for(default_pm, cust["id"], "invoice_settings[default_payment_method]")
        return self._stamp("customers", cust)

    def update_customer(self, customer_id: str, params: dict) -> dict:
        cust = self.get("customers", customer_id, "customer")
        for field in ("email", "name", "description", "phone"):
            if field in params:
                cust[field] = params[field] or None
        if "metadata" in params:
            cust["metadata"] = _merge_metadata(cust["metadata"], params["metadata"])
        if "invoice_settings" in params and "default_payment_method" in (params["invoice_settings"] or {}):
            pm = params["invoice_settings"]["default_payment_method"]
            cust["invoice_settings"]["default_payment_method"] = (
                self._payment_method_for(pm, customer_id, "invoice_settings[default_payment_method]") if pm else None)
        return cust

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
        if params.get("unit_amount") is None:
            raise StripeError(400, "Missing required param: unit_amount.", code="parameter_missing", param="unit_amount")
        recurring = params.get("recurring")
        if recurring and recurring.get("interval") not in ("day", "week", "month", "year"):
            raise StripeError(400, "Invalid recurring[interval]", param="recurring[interval]")
        created = self._stamp("prices", build.price(self.now(), params, product_id))
        if not self.products[product_id]["default_price"]:
            self.products[product_id]["default_price"] = created["id"]
        return created

    # subscriptions ------------------------------------------------------------------------------
    def create_subscription(self, params: dict, idempotency_key: str | None) -> dict:
        cust = self.get("customers", params.get("customer"), "customer", "customer")
        items = params.get("items") or []
        if not items:
            raise StripeError(400, "Missing required param: items.", code="parameter_missing", param="items")
        prices = []
        for index, item in enumerate(items):
            price_obj = self.get("prices", item.get("price"), "price", f"items[{index}][price]")
            if not price_obj["recurring"]:
                raise StripeError(400, "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.", param=f"items[{index}][price]")
            prices.append((price_obj, int(item.get("quantity", 1))))
        currencies = {p["currency"] for p, _ in prices}
        intervals = {(p["recurring"]["interval"], p["recurring"]["interval_count"]) for p, _ in prices}
        if len(currencies) > 1 or len(intervals) > 1:
            raise StripeError(400, "All prices on a subscription must have the same currency and recurring interval.", param="items")
        now = self.now()
        sub = build.subscription(now, cust["id"], prices[0][0]["currency"], params)
        pm_id = params.get("default_payment_method")
        if pm_id:
            sub["default_payment_method"] = self._payment_method_for(pm_id, cust["id"], "default_payment_method")
        trial_days = params.get("trial_period_days")
        interval, count = next(iter(intervals))
        if trial_days:
            sub["status"] = "trialing"
            sub["trial_start"], sub["trial_end"] = now, now + 86400 * int(trial_days)
            period = (now, sub["trial_end"])
        else:
            period = (now, build.add_interval(now, interval, count))
            if sub["collection_method"] == "charge_automatically":
                payment_method = self._charging_method(sub, cust)
                if payment_method is None:
                    raise StripeError(400, "This customer has no attached payment source or default payment method. Please consider adding a default payment method.", code="resource_missing")
                if payment_method["_declines"]:
                    if params.get("payment_behavior") == "error_if_incomplete":
                        raise StripeError(402, "Your card was declined.", type_="card_error", code="card_declined", decline_code="generic_decline")
                    sub["status"] = "incomplete"
        sub["_interval"], sub["_periods"] = (interval, count), 1
        sub["billing_cycle_anchor"] = period[1] if trial_days else now
        for price_obj, quantity in prices:
            sub["items"]["data"].append(build.subscription_item(now, sub["id"], price_obj, quantity, period))
        self._stamp("subscriptions", sub)
        for index, entry in enumerate(params.get("discounts") or []):
            self._attach_discount(sub, entry, index)
        if params.get("cancel_at_period_end"):
            self._schedule_cancel(sub, period[1])
        self.emit("customer.subscription.created", self.render("subscriptions", sub), None, idempotency_key)
        return sub

    def _charging_method(self, sub: dict, cust: dict) -> dict | None:
        pm_id = sub["default_payment_method"] or cust["invoice_settings"]["default_payment_method"]
        return self.payment_methods.get(pm_id) if pm_id else None

    def _attach_discount(self, sub: dict, entry: dict, index: int) -> None:
        if entry.get("discount"):
            if entry["discount"] not in sub["discounts"]:
                raise missing("discount", entry["discount"], f"discounts[{index}][discount]")
            return
        if not entry.get("coupon"):
            raise StripeError(400, "Each discount must name a coupon or an existing discount.", param=f"discounts[{index}]")
        coupon_obj = self.get("coupons", entry["coupon"], "coupon", f"discounts[{index}][coupon]")
        if not coupon_obj["valid"]:
            raise StripeError(400, f"Coupon expired: {coupon_obj['id']}", code="coupon_expired", param=f"discounts[{index}][coupon]")
        now = self.now()
        if coupon_obj["duration"] == "repeating":
            end = build.add_interval(now, "month", coupon_obj["duration_in_months"])
        elif coupon_obj["duration"] == "once":
            end = self.period_end(sub)
        else:
            end = None
        disc = self._stamp("discounts", build.discount(now, coupon_obj, sub, end))
        sub["discounts"].append(disc["id"])
        coupon_obj["times_redeemed"] += 1
        if coupon_obj["max_redemptions"] and coupon_obj["times_redeemed"] >= coupon_obj["max_redemptions"]:
            coupon_obj["valid"] = False

    @staticmethod
    def period_end(sub: dict) -> int:
        return sub["items"]["data"][0]["current_period_end"]

    def _schedule_cancel(self, sub: dict, at: int) -> None:
        sub["cancel_at"], sub["canceled_at"] = at, self.now()
        sub["cancellation_details"]["reason"] = "cancellation_requested"

    def update_subscription(self, sub_id: str, params: dict, idempotency_key: str | None) -> dict:
        sub = self.get("subscriptions", sub_id, "subscription")
        before = self.render("subscriptions", sub)
        if sub["status"] in ("canceled", "incomplete_expired"):
            allowed = {"metadata", "cancellation_details", "expand"}
            if set(params) - allowed:
                raise StripeError(400, "A canceled subscription can only update its cancellation_details and metadata.")
        if "discounts" in params:
            previous = list(sub["discounts"])
            kept = {e["discount"] for e in params["discounts"] or [] if isinstance(e, dict) and e.get("discount")}
            sub["discounts"] = [d for d in previous if d in kept]
            for index, entry in enumerate(params["discounts"] or []):
                if not entry.get("discount"):
                    self._attach_discount(sub, entry, index)
        if "pause_collection" in params:
            pause = params["pause_collection"]
            if pause == "":
                sub["pause_collection"] = None
            else:
                if pause.get("behavior") is None:
                    raise StripeError(400, "Missing required param: pause_collection[behavior].", code="parameter_missing", param="pause_collection[behavior]")
                sub["pause_collection"] = {"behavior": pause["behavior"], "resumes_at": pause.get("resumes_at")}
        if "cancel_at_period_end" in params:
            if params["cancel_at_period_end"]:
                self._schedule_cancel(sub, self.period_end(sub))
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
                if at <= self.now():
                    raise StripeError(400, "cancel_at must be in the future.", param="cancel_at")
                self._schedule_cancel(sub, at)
                sub["cancel_at_period_end"] = at == self.period_end(sub)
        if "cancellation_details" in params:
            details = params["cancellation_details"] or {}
            for field in ("comment", "feedback"):
                if field in details:
                    sub["cancellation_details"][field] = details[field] or None
        if "metadata" in params:
            sub["metadata"] = _merge_metadata(sub["metadata"], params["metadata"])
        for field in ("description", "default_payment_method"):
            if field in params:
                sub[field] = params[field] or None
        self._emit_update(sub, before, idempotency_key)
        return sub

    def _emit_update(self, sub: dict, before: dict, idempotency_key: str | None) -> None:
        after = self.render("subscriptions", sub)
        previous = {key: before[key] for key in after if before.get(key) != after[key]}
        if previous:
            self.emit("customer.subscription.updated", after, previous, idempotency_key)

    def cancel_subscription(self, sub_id: str, params: dict, idempotency_key: str | None) -> dict:
        sub = self.get("subscriptions", sub_id, "subscription")
        if sub["status"] == "canceled":
            raise StripeError(400, f"This subscription has already been canceled: {sub_id}", code="resource_missing")
        details = params.get("cancellation_details") or {}
        self._end(sub, self.now(), details.get("feedback"), details.get("comment"), "cancellation_requested", idempotency_key)
        return sub

    def _end(self, sub: dict, at: int, feedback, comment, reason: str, idempotency_key: str | None = None) -> None:
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
        self.emit("customer.subscription.deleted", after, previous, idempotency_key)

    def list_subscriptions(self, params: dict) -> list[dict]:
        status = params.get("status")
        subs = list(self.subscriptions.values())
        if params.get("customer"):
            subs = [s for s in subs if s["customer"] == params["customer"]]
        if params.get("price"):
            subs = [s for s in subs if any(i["price"] == params["price"] for i in s["items"]["data"])]
        if status in (None, ""):
            subs = [s for s in subs if s["status"] != "canceled"]
        elif status == "ended":
            subs = [s for s in subs if s["status"] in ("canceled", "incomplete_expired")]
        elif status != "all":
            subs = [s for s in subs if s["status"] == status]
        return subs

    # what falls due when the clock moves -----------------------------------------------------------
    def run_due(self) -> None:
        now = self.now()
        for sub in list(self.subscriptions.values()):
            while sub["status"] not in ("canceled", "incomplete", "incomplete_expired"):
                before = self.render("subscriptions", sub)
                next_due = self._next_due(sub)
                if next_due is None or next_due > now:
                    break
                self._apply_due(sub, next_due)
                if sub["status"] != "canceled":
                    self._emit_update(sub, before, None)

    def _next_due(self, sub: dict) -> int | None:
        moments = [self.period_end(sub)]
        if sub["cancel_at"]:
            moments.append(sub["cancel_at"])
        if sub["pause_collection"] and sub["pause_collection"].get("resumes_at"):
            moments.append(sub["pause_collection"]["resumes_at"])
        moments += [self.discounts[d]["end"] for d in sub["discounts"] if self.discounts[d]["end"]]
        return min(moments)

    def _apply_due(self, sub: dict, at: int) -> None:
        if sub["cancel_at"] and sub["cancel_at"] <= at:
            self._end(sub, sub["cancel_at"], None, None, "cancellation_requested")
            return
        pause = sub["pause_collection"]
        if pause and pause.get("resumes_at") and pause["resumes_at"] <= at:
            sub["pause_collection"] = None
        sub["discounts"] = [d for d in sub["discounts"] if not self.discounts[d]["end"] or self.discounts[d]["end"] > at]
        if self.period_end(sub) <= at:
            self._renew(sub)

    def _renew(self, sub: dict) -> None:
        interval, count = sub["_interval"]
        sub["_periods"] += 1
        start = self.period_end(sub)
        end = build.add_interval(sub["billing_cycle_anchor"], interval, count * sub["_periods"]) \
            if sub["status"] != "trialing" else build.add_interval(start, interval, count)
        if sub["status"] == "trialing":
            sub["billing_cycle_anchor"], sub["_periods"] = start, 1
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = start, end
        if sub["pause_collection"]:
            return
        payment_method = self._charging_method(sub, self.customers[sub["customer"]])
        declined = payment_method is None or payment_method["_declines"]
        if sub["collection_method"] == "charge_automatically":
            sub["status"] = "past_due" if declined else "active"
        elif sub["status"] == "trialing":
            sub["status"] = "active"

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
        for config in self.portal_configurations.values():
            if config["is_default"]:
                return config
        return self._stamp("portal_configurations", build.portal_configuration(self.now(), {}, is_default=True))

    def create_portal_configuration(self, params: dict) -> dict:
        return self._stamp("portal_configurations", build.portal_configuration(
            self.now(), params, is_default=not self.portal_configurations))

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

    def emit(self, event_type: str, data_object: dict, previous: dict | None, idempotency_key: str | None) -> dict:
        evt = self._stamp("events", build.event(self.now(), event_type, data_object, previous, idempotency_key))
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
