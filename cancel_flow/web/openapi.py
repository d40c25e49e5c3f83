"""The OpenAPI 3 document for `/api`."""


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _rate(nullable_number: str = "number") -> dict:
    return {"type": [nullable_number, "null"]}


def openapi_document(base_url: str) -> dict:
    money = {"type": "array", "items": {"type": "object", "required": ["currency", "amount"], "properties": {
        "currency": {"type": "string"}, "amount": {"type": "integer", "description": "minor units"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "cancel-flow API", "version": "1.0.0",
                 "description": "Mint cancel and billing links; read the retention numbers."},
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/api/links": {"post": {
                "summary": "Mint a cancel link and a billing link for a customer",
                "operationId": "createLinks",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LinkRequest"}}}},
                "responses": {
                    "201": {"description": "Links minted", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Links"}}}},
                    "401": _error("Missing or invalid API key"),
                    "404": _error("No such customer, or no active subscription"),
                    "422": _error("Malformed body, or a subscription must be chosen"),
                    "503": _error("Stripe could not be reached"),
                },
            }},
            "/api/stats": {"get": {
                "summary": "The dashboard's numbers for a date range (UTC, inclusive; default the last 30 days)",
                "operationId": "getStats",
                "parameters": [
                    {"name": "from", "in": "query", "required": False, "schema": {"type": "string", "format": "date"}},
                    {"name": "to", "in": "query", "required": False, "schema": {"type": "string", "format": "date"}},
                ],
                "responses": {
                    "200": {"description": "Numbers", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Stats"}}}},
                    "401": _error("Missing or invalid API key"),
                    "422": _error("Invalid dates"),
                },
            }},
            "/api/openapi.json": {"get": {
                "summary": "This document", "operationId": "getOpenapi",
                "responses": {"200": {"description": "OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}},
                              "401": _error("Missing or invalid API key")},
            }},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "cancel-flow api-key create NAME"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "LinkRequest": {"type": "object", "additionalProperties": False,
                                "description": "Exactly one of customer or email.",
                                "properties": {
                                    "customer": {"type": "string", "pattern": "^cus_[A-Za-z0-9_]+$"},
                                    "email": {"type": "string", "format": "email"},
                                    "subscription": {"type": "string", "pattern": "^sub_[A-Za-z0-9_]+$"}},
                                "oneOf": [{"required": ["customer"], "not": {"required": ["email"]}},
                                          {"required": ["email"], "not": {"required": ["customer"]}}]},
                "Links": {"type": "object", "required": ["cancel_url", "billing_url", "expires_at", "customer", "subscription"],
                          "properties": {"cancel_url": {"type": "string", "format": "uri"},
                                         "billing_url": {"type": "string", "format": "uri"},
                                         "expires_at": {"type": "string", "format": "date-time"},
                                         "customer": {"type": "string"}, "subscription": {"type": "string"}}},
                "Stats": {"type": "object", "required": ["from", "to", "sessions", "outcomes", "saved", "canceled", "save_rate",
                                                         "mrr_saved", "discount_cost", "reasons", "offers", "durability", "weekly"],
                          "properties": {
                              "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"},
                              "sessions": {"type": "integer"},
                              "outcomes": {"type": "object", "additionalProperties": {"type": "integer"}},
                              "saved": {"type": "integer"}, "canceled": {"type": "integer"}, "save_rate": _rate(),
                              "mrr_saved": money, "discount_cost": money,
                              "reasons": {"type": "array", "items": {"type": "object", "properties": {
                                  "reason": {"type": "string"}, "sessions": {"type": "integer"}, "saved": {"type": "integer"},
                                  "canceled": {"type": "integer"}, "save_rate": _rate()}}},
                              "offers": {"type": "array", "items": {"type": "object", "properties": {
                                  "offer": {"type": "string"}, "shown": {"type": "integer"}, "accepted": {"type": "integer"},
                                  "rate": _rate()}}},
                              "durability": {"type": "array", "items": {"type": "object", "properties": {
                                  "days": {"type": "integer"}, "saves": {"type": "integer"},
                                  "still_active": {"type": "integer"}, "share": _rate()}}},
                              "weekly": {"type": "array", "items": {"type": "object", "properties": {
                                  "week": {"type": "string", "format": "date"}, "sessions": {"type": "integer"},
                                  "saves": {"type": "integer"}, "cancels": {"type": "integer"}}}},
                          }},
            },
        },
    }
