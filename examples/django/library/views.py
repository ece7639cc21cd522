import logging

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from library.models import Book

log = logging.getLogger(__name__)


def book_list(request: HttpRequest) -> HttpResponse:
    """N+1: the template reads book.author for each book, one query per row."""
    log.info("listing books")
    return render(request, "library/books.html", {"books": Book.objects.order_by("id")[:20]})


def book_list_eager(request: HttpRequest) -> HttpResponse:
    """The fix: one query with a join."""
    books = Book.objects.select_related("author").order_by("id")[:20]
    return render(request, "library/books.html", {"books": books})


def book_detail(request: HttpRequest, book_id: int) -> JsonResponse:
    title = cache.get(f"book:{book_id}")
    if title is None:
        title = get_object_or_404(Book, pk=book_id).title
        cache.set(f"book:{book_id}", title, 60)
    return JsonResponse({"id": book_id, "title": title})
