from django.http import HttpRequest, JsonResponse

from djbench.models import Customer, Order


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})


def item(request: HttpRequest, item_id: int) -> JsonResponse:
    return JsonResponse({"id": item_id, "name": f"item {item_id}"})


def db(request: HttpRequest) -> JsonResponse:
    customer_id = int(request.GET.get("customer_id", 7))
    customer = Customer.objects.filter(pk=customer_id).first()
    count = Order.objects.filter(customer_id=customer_id).count()
    recent = list(Order.objects.filter(customer_id=customer_id).order_by("-id")[:5])
    return JsonResponse(
        {
            "customer": customer.name if customer else None,
            "orders": count,
            "recent": [{"id": o.id, "total": o.total} for o in recent],
        }
    )
