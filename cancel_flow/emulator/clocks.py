"""Stripe's test clocks (https://docs.stripe.com/billing/testing/test-clocks): customers created on a
clock, and everything of theirs, live at the clock's frozen time and move only when it is advanced."""

from cancel_flow.emulator import objects as build
from cancel_flow.emulator.errors import StripeError

# https://docs.stripe.com/billing/testing/test-clocks#limitations: three customers per clock,
# three subscriptions per customer.
MAX_CUSTOMERS = 3
MAX_SUBSCRIPTIONS = 3


class TestClocks:
    """Mixed into `Account`."""

    def time_for(self, clock_id: str | None) -> int:
        """The time of an object: its test clock's frozen time, else the emulator's own clock."""
        if clock_id and clock_id in self.test_clocks:
            return self.test_clocks[clock_id]["frozen_time"]
        return self.now()

    def create_test_clock(self, params: dict) -> dict:
        # https://docs.stripe.com/api/test_clocks/create
        if params.get("frozen_time") in (None, ""):
            raise StripeError(400, "Missing required param: frozen_time.", code="parameter_missing", param="frozen_time")
        clock = self._stamp("test_clocks", build.test_clock(self.now(), params))
        self.emit("test_helpers.test_clock.created", self.render("test_clocks", clock), None, None)
        return clock

    def advance_limit(self, clock: dict) -> int:
        """https://docs.stripe.com/api/test_clocks/advance: at most two intervals of the shortest
        subscription on the clock ahead of its frozen time; two years when it has none."""
        frozen = clock["frozen_time"]
        limits = [build.add_interval(frozen, "year", 2)]
        for sub in self.subscriptions.values():
            if sub["test_clock"] == clock["id"] and sub["status"] not in ("canceled", "incomplete_expired"):
                interval, count = sub["_interval"]
                limits.append(build.add_interval(frozen, interval, 2 * count))
        return min(limits)

    def advance_test_clock(self, clock_id: str, params: dict) -> dict:
        clock = self.get("test_clocks", clock_id, "test_clock")
        target = params.get("frozen_time")
        if target in (None, ""):
            raise StripeError(400, "Missing required param: frozen_time.", code="parameter_missing", param="frozen_time")
        if target <= clock["frozen_time"]:
            raise StripeError(400, "The frozen_time must be after the test clock's current frozen time.", param="frozen_time")
        limit = self.advance_limit(clock)
        if target > limit:
            raise StripeError(400, "Cannot advance the test clock more than two intervals in the future from the shortest "
                                   f"subscription in this test clock (or two years when it has none); the latest allowed "
                                   f"frozen_time is {limit}.", param="frozen_time")
        clock["status"] = "advancing"
        clock["status_details"] = {"advancing": {"target_frozen_time": target}}
        advancing = self.render("test_clocks", clock)
        self.emit("test_helpers.test_clock.advancing", advancing, None, None)
        # Stripe moves the clock in the background; here it has already arrived when the call returns,
        # and the answer still says `advancing`, as Stripe's does: wait for `ready` as against Stripe.
        self.run_due(clock_id, target)
        clock["frozen_time"] = target
        clock["status"], clock["status_details"] = "ready", {}
        self.emit("test_helpers.test_clock.ready", self.render("test_clocks", clock), None, None)
        return advancing

    def delete_test_clock(self, clock_id: str) -> dict:
        """https://docs.stripe.com/api/test_clocks/delete: the clock goes with every object on it."""
        clock = self.get("test_clocks", clock_id, "test_clock")
        customers = {c for c, cust in self.customers.items() if cust["test_clock"] == clock_id}
        for store in ("subscriptions", "invoices"):
            objects = getattr(self, store)
            for object_id in [o for o, obj in objects.items() if obj.get("test_clock") == clock_id or obj.get("customer") in customers]:
                del objects[object_id]
        for object_id in [d for d, disc in self.discounts.items() if disc["customer"] in customers]:
            del self.discounts[object_id]
        for object_id in [p for p, pm in self.payment_methods.items() if pm["customer"] in customers]:
            del self.payment_methods[object_id]
        for customer_id in customers:
            del self.customers[customer_id]
        del self.test_clocks[clock_id]
        self.emit("test_helpers.test_clock.deleted", {**build.public(clock), "deleted": True}, None, None)
        return {"id": clock_id, "object": "test_helpers.test_clock", "deleted": True}
