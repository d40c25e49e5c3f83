"""The `/v1` routes: parameters checked as Stripe checks them, objects rendered as Stripe renders them."""

import re

from cancel_flow.emulator.params import check_params
from cancel_flow.emulator.state import Account, StripeError


class Call:
    """One request to `/v1`, already authenticated and decoded."""

    def __init__(self, account: Account, params: dict, ids: tuple, idempotency_key: str | None, base_url: str):
        self.account, self.params, self.ids = account, params, ids
        self.idempotency_key, self.base_url = idempotency_key, base_url

    def checked(self, params_name: str) -> dict:
        return check_params(self.params, params_name)

    def render(self, store: str, obj: dict, params: dict) -> dict:
        return self.account.render(store, obj, params.get("expand"))


def _deleted(obj_id: str, kind: str) -> dict:
    return {"id": obj_id, "object": kind, "deleted": True}


def _retrieve(store: str, kind: str, params_name: str):
    def handler(call: Call):
        params = call.checked(params_name)
        return call.render(store, call.account.get(store, call.ids[0], kind), params)
    return handler


def _list(store: str, params_name: str, url: str, filters=()):
    def handler(call: Call):
        params = call.checked(params_name)
        items = list(getattr(call.account, store).values())
        for field in filters:
            if field in params and params[field] not in (None, ""):
                items = [o for o in items if o.get(field) == params[field]]
        return call.account.page(items, params, url, store)
    return handler


def _listed_by_account(store: str, params_name: str, url: str, method_name: str):
    """A list the account filters itself (by the params Stripe filters on)."""
    def handler(call: Call):
        params = call.checked(params_name)
        return call.account.page(getattr(call.account, method_name)(params), params, url, store)
    return handler


def _create(store: str, params_name: str, method_name: str, with_key: bool = False):
    def handler(call: Call):
        params = call.checked(params_name)
        body = {k: v for k, v in params.items() if k != "expand"}
        create = getattr(call.account, method_name)
        obj = create(body, call.idempotency_key) if with_key else create(body)
        return call.render(store, obj, params)
    return handler


def _change(store: str, params_name: str, method_name: str):
    """A POST to one object that may repeat under its idempotency key (update, pay)."""
    def handler(call: Call):
        params = call.checked(params_name)
        body = {k: v for k, v in params.items() if k != "expand"}
        changed = getattr(call.account, method_name)(call.ids[0], body, call.idempotency_key)
        return call.render(store, changed, params)
    return handler


def attach_payment_method(call: Call):
    # https://docs.stripe.com/api/payment_methods/attach
    params = call.checked("PaymentMethodAttachParams")
    if not params.get("customer"):
        raise StripeError(400, "Missing required param: customer.", code="parameter_missing", param="customer")
    return call.render("payment_methods", call.account.attach_payment_method(call.ids[0], params["customer"]), params)


def update_customer(call: Call):
    params = call.checked("CustomerUpdateParams")
    return call.render("customers", call.account.update_customer(call.ids[0], params), params)


def delete_customer(call: Call):
    call.checked("CustomerDeleteParams")
    call.account.delete_customer(call.ids[0])
    return _deleted(call.ids[0], "customer")


def list_customers(call: Call):
    params = call.checked("CustomerListParams")
    items = list(call.account.customers.values())
    if params.get("email"):
        items = [c for c in items if c["email"] == params["email"]]
    if params.get("test_clock"):
        items = [c for c in items if c["test_clock"] == params["test_clock"]]
    return call.account.page(items, params, "/v1/customers", "customers")


def search_customers(call: Call):
    params = call.checked("CustomerSearchParams")
    if not params.get("query"):
        raise StripeError(400, "Missing required param: query.", code="parameter_missing", param="query")
    found = call.account.search_customers(params["query"])
    result = call.account.page(found, {"limit": params.get("limit", 10), "expand": params.get("expand")}, "/v1/customers/search", "customers")
    result.update(object="search_result", next_page=None)
    return result


def cancel_subscription(call: Call):
    params = call.checked("SubscriptionCancelParams")
    return call.render("subscriptions", call.account.cancel_subscription(call.ids[0], params, call.idempotency_key), params)


def delete_coupon(call: Call):
    call.checked("CouponDeleteParams")
    call.account.get("coupons", call.ids[0], "coupon")
    del call.account.coupons[call.ids[0]]
    return _deleted(call.ids[0], "coupon")


def update_portal_configuration(call: Call):
    params = call.checked("billing_portal.ConfigurationUpdateParams")
    body = {k: v for k, v in params.items() if k != "expand"}
    return call.render("portal_configurations", call.account.update_portal_configuration(call.ids[0], body), params)


def create_portal_session(call: Call):
    params = call.checked("billing_portal.SessionCreateParams")
    body = {k: v for k, v in params.items() if k != "expand"}
    return call.render("portal_sessions", call.account.create_portal_session(body, call.base_url), params)


def create_webhook_endpoint(call: Call):
    params = call.checked("WebhookEndpointCreateParams")
    endpoint = call.account.create_webhook_endpoint(params)
    rendered = call.render("webhook_endpoints", endpoint, params)
    rendered["secret"] = endpoint["secret"]
    return rendered


def _without_secret(handler):
    def wrapped(call: Call):
        result = handler(call)
        for obj in result.get("data", [result]):
            obj.pop("secret", None)
        return result
    return wrapped


def update_webhook_endpoint(call: Call):
    params = call.checked("WebhookEndpointUpdateParams")
    endpoint = call.account.get("webhook_endpoints", call.ids[0], "webhook_endpoint")
    for field in ("url", "enabled_events", "description"):
        if field in params:
            endpoint[field] = params[field]
    if "disabled" in params:
        endpoint["status"] = "disabled" if params["disabled"] else "enabled"
    rendered = call.render("webhook_endpoints", endpoint, params)
    rendered.pop("secret", None)
    return rendered


def delete_webhook_endpoint(call: Call):
    call.checked("WebhookEndpointDeleteParams")
    call.account.get("webhook_endpoints", call.ids[0], "webhook_endpoint")
    del call.account.webhook_endpoints[call.ids[0]]
    return _deleted(call.ids[0], "webhook_endpoint")


def list_events(call: Call):
    params = call.checked("EventListParams")
    items = list(call.account.events.values())
    if params.get("type"):
        pattern = re.compile("^" + re.escape(params["type"]).replace(r"\*", "[^.]+") + "$")
        items = [e for e in items if pattern.match(e["type"])]
    if params.get("types"):
        items = [e for e in items if e["type"] in params["types"]]
    return call.account.page(items, params, "/v1/events", "events")


def preview_invoice(call: Call):
    # https://docs.stripe.com/api/invoices/create_preview
    params = call.checked("InvoiceCreatePreviewParams")
    body = {k: v for k, v in params.items() if k != "expand"}
    preview = call.account.preview_invoice(body)
    return call.account.render("invoices", preview, params.get("expand"))


def create_test_clock(call: Call):
    # https://docs.stripe.com/api/test_clocks/create
    params = call.checked("test_helpers.TestClockCreateParams")
    return call.render("test_clocks", call.account.create_test_clock(params), params)


def advance_test_clock(call: Call):
    # https://docs.stripe.com/api/test_clocks/advance
    params = call.checked("test_helpers.TestClockAdvanceParams")
    return call.account.advance_test_clock(call.ids[0], params)


def delete_test_clock(call: Call):
    # https://docs.stripe.com/api/test_clocks/delete
    call.checked("test_helpers.TestClockDeleteParams")
    return call.account.delete_test_clock(call.ids[0])


_ID = r"([^/]+)"
ROUTES = [
    ("POST", "customers", _create("customers", "CustomerCreateParams", "create_customer")),
    ("GET", "customers", list_customers),
    ("GET", "customers/search", search_customers),
    ("GET", f"customers/{_ID}", _retrieve("customers", "customer", "CustomerRetrieveParams")),
    ("POST", f"customers/{_ID}", update_customer),
    ("DELETE", f"customers/{_ID}", delete_customer),
    ("GET", f"payment_methods/{_ID}", _retrieve("payment_methods", "payment_method", "PaymentMethodRetrieveParams")),
    ("POST", f"payment_methods/{_ID}/attach", attach_payment_method),
    ("POST", "products", _create("products", "ProductCreateParams", "create_product")),
    ("GET", "products", _list("products", "ProductListParams", "/v1/products", ("active",))),
    ("GET", f"products/{_ID}", _retrieve("products", "product", "ProductRetrieveParams")),
    ("POST", "prices", _create("prices", "PriceCreateParams", "create_price")),
    ("GET", "prices", _list("prices", "PriceListParams", "/v1/prices", ("active", "product", "currency", "type"))),
    ("GET", f"prices/{_ID}", _retrieve("prices", "price", "PriceRetrieveParams")),
    ("POST", "subscriptions", _create("subscriptions", "SubscriptionCreateParams", "create_subscription", with_key=True)),
    ("GET", "subscriptions", _listed_by_account("subscriptions", "SubscriptionListParams", "/v1/subscriptions", "list_subscriptions")),
    ("GET", f"subscriptions/{_ID}", _retrieve("subscriptions", "subscription", "SubscriptionRetrieveParams")),
    ("POST", f"subscriptions/{_ID}", _change("subscriptions", "SubscriptionUpdateParams", "update_subscription")),
    ("DELETE", f"subscriptions/{_ID}", cancel_subscription),
    ("POST", "coupons", _create("coupons", "CouponCreateParams", "create_coupon")),
    ("GET", "coupons", _list("coupons", "CouponListParams", "/v1/coupons")),
    ("GET", f"coupons/{_ID}", _retrieve("coupons", "coupon", "CouponRetrieveParams")),
    ("DELETE", f"coupons/{_ID}", delete_coupon),
    ("POST", "billing_portal/configurations", _create("portal_configurations", "billing_portal.ConfigurationCreateParams", "create_portal_configuration")),
    ("GET", "billing_portal/configurations", _list("portal_configurations", "billing_portal.ConfigurationListParams", "/v1/billing_portal/configurations", ("active", "is_default"))),
    ("GET", f"billing_portal/configurations/{_ID}", _retrieve("portal_configurations", "configuration", "billing_portal.ConfigurationRetrieveParams")),
    ("POST", f"billing_portal/configurations/{_ID}", update_portal_configuration),
    ("POST", "billing_portal/sessions", create_portal_session),
    ("POST", "webhook_endpoints", create_webhook_endpoint),
    ("GET", "webhook_endpoints", _without_secret(_list("webhook_endpoints", "WebhookEndpointListParams", "/v1/webhook_endpoints"))),
    ("GET", f"webhook_endpoints/{_ID}", _without_secret(_retrieve("webhook_endpoints", "webhook_endpoint", "WebhookEndpointRetrieveParams"))),
    ("POST", f"webhook_endpoints/{_ID}", update_webhook_endpoint),
    ("DELETE", f"webhook_endpoints/{_ID}", delete_webhook_endpoint),
    # https://docs.stripe.com/api/invoices/list
    ("GET", "invoices", _listed_by_account("invoices", "InvoiceListParams", "/v1/invoices", "list_invoices")),
    ("POST", "invoices/create_preview", preview_invoice),
    ("GET", f"invoices/{_ID}", _retrieve("invoices", "invoice", "InvoiceRetrieveParams")),
    # https://docs.stripe.com/api/invoices/pay
    ("POST", f"invoices/{_ID}/pay", _change("invoices", "InvoicePayParams", "pay_invoice")),
    ("GET", f"payment_intents/{_ID}", _retrieve("payment_intents", "payment_intent", "PaymentIntentRetrieveParams")),
    ("POST", "test_helpers/test_clocks", create_test_clock),
    ("GET", "test_helpers/test_clocks", _list("test_clocks", "test_helpers.TestClockListParams", "/v1/test_helpers/test_clocks")),
    ("GET", f"test_helpers/test_clocks/{_ID}", _retrieve("test_clocks", "test_clock", "test_helpers.TestClockRetrieveParams")),
    ("POST", f"test_helpers/test_clocks/{_ID}/advance", advance_test_clock),
    ("DELETE", f"test_helpers/test_clocks/{_ID}", delete_test_clock),
    ("GET", "events", list_events),
    ("GET", f"events/{_ID}", _retrieve("events", "event", "EventRetrieveParams")),
]
_COMPILED = [(method, re.compile(f"^/v1/{pattern}$"), handler) for method, pattern, handler in ROUTES]


def find_route(method: str, path: str):
    known_path = False
    for route_method, pattern, handler in _COMPILED:
        match = pattern.match(path)
        if match:
            known_path = True
            if route_method == method:
                return handler, match.groups()
    if known_path:
        raise StripeError(405, f"Unrecognized request URL ({method}: {path}).")
    raise StripeError(404, f"Unrecognized request URL ({method}: {path}). The emulator serves only the part of Stripe's API that cancel-flow uses.")
