"""HTTP views: each request's events and rows commit together, or not at all."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from eventstore import ConcurrencyError
from eventstore.integrations.django import get_event_store
from orders import domain
from orders.models import Order


def notify_warehouse(order: Order) -> None:
    """Work done after both writes, inside the atomic block (the tests make it fail)."""


def as_json(order: Order) -> dict[str, object]:
    return {
        "order_id": order.order_id,
        "customer": order.customer,
        "total_cents": order.total_cents,
        "status": order.status,
        "version": order.version,
    }


def conflict(error: Exception) -> JsonResponse:
    return JsonResponse({"error": str(error)}, status=409)


@csrf_exempt
@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    """Place an order (and pay for it in the same request with ``"pay_now": true``)."""
    body = json.loads(request.body)
    store = get_event_store()
    try:
        with transaction.atomic():
            state, version = domain.place(
                store, body["order_id"], body["customer"], int(body["total_cents"])
            )
            if body.get("pay_now"):
                state, version = domain.pay(store, body["order_id"])
            order = Order.objects.create(
                order_id=body["order_id"],
                customer=state.customer,
                total_cents=state.total_cents,
                status=state.status,
                version=version,
            )
            notify_warehouse(order)
    except (ConcurrencyError, domain.OrderRejectedError) as error:
        return conflict(error)
    return JsonResponse(as_json(order), status=201)


@csrf_exempt
@require_POST
def cancel_order(request: HttpRequest, order_id: str) -> JsonResponse:
    """Cancel the order as the client last saw it: ``{"expected_version": n, "reason": ...}``."""
    body = json.loads(request.body)
    store = get_event_store()
    try:
        with transaction.atomic():
            order = get_object_or_404(Order.objects.select_for_update(), pk=order_id)
            order.status = "cancelled"
            order.save()  # the row first: a conflict on the append must take it back too
            _, order.version = domain.cancel(
                store, order_id, body.get("reason", ""), int(body["expected_version"])
            )
            order.save(update_fields=["version"])
    except (ConcurrencyError, domain.OrderRejectedError) as error:
        return conflict(error)
    return JsonResponse(as_json(order))


@require_GET
def order_detail(request: HttpRequest, order_id: str) -> JsonResponse:
    return JsonResponse(as_json(get_object_or_404(Order, pk=order_id)))
