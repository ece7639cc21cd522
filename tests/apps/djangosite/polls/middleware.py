"""A middleware that fails before Django resolves the URL when the request asks it to."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class BreakOnHeader:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.headers.get("X-Break-Middleware"):
            raise RuntimeError("the middleware failed")
        return self.get_response(request)
