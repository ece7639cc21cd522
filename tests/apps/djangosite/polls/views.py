"""Views of the test project: plain Django, no telemetry code."""

from __future__ import annotations

import logging
import os

from django.core.cache import cache, caches
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render

from polls.models import Choice, Question

log = logging.getLogger("polls.views")


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("home")


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})


def index(request: HttpRequest) -> HttpResponse:
    """N+1: the template reads choice.question for each of ten choices (one query each)."""
    choices = Choice.objects.order_by("id")[:10]
    return render(request, "polls/index.html", {"choices": choices})


def index_eager(request: HttpRequest) -> HttpResponse:
    choices = Choice.objects.select_related("question").order_by("id")[:10]
    return render(request, "polls/index.html", {"choices": choices})


def detail(request: HttpRequest, question_id: int) -> JsonResponse:
    question = get_object_or_404(Question, pk=question_id)
    choices = list(Choice.objects.filter(question=question).values_list("choice_text", flat=True))
    return JsonResponse({"question": question.question_text, "choices": choices, "pid": os.getpid()})


def slow(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_sleep(%s)", [0.15])
        else:
            cursor.execute(
                "WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < %s) "
                "SELECT count(*) FROM cnt",
                [1000000],
            )
        cursor.fetchone()
    return JsonResponse({"slow": True})


def cache_script(request: HttpRequest, round_no: int) -> JsonResponse:
    """Per call: default 2 hits and 3 misses, sessions 1 miss."""
    cache.set(f"a{round_no}", 1)
    cache.get(f"a{round_no}")  # hit
    cache.get(f"missing{round_no}", "fallback")  # miss
    cache.get_many([f"a{round_no}", f"b{round_no}", f"c{round_no}"])  # 1 hit, 2 misses
    caches["sessions"].get(f"s{round_no}")  # miss
    return JsonResponse({"round": round_no})


def log_line(request: HttpRequest) -> JsonResponse:
    log.info("polls log line for %s", request.path)
    return JsonResponse({"logged": True})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed")


def secret_error(request: HttpRequest) -> HttpResponse:
    # The URL is built apart from the raise: a traceback quotes that source line.
    url = "https://peer.invalid/v1/polls?page=2&token=" + "django-S3KR1T"
    raise RuntimeError(f"the peer refused {url}")


def pid(request: HttpRequest) -> JsonResponse:
    log.info("serving pid")
    return JsonResponse({"pid": os.getpid()})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """A streaming body that queries while it is sent: those queries are the request's."""

    def rows():
        for question in Question.objects.order_by("id")[:3]:
            yield f"{question.question_text}: {question.choice_set.count()}\n"

    return StreamingHttpResponse(rows(), content_type="text/plain")
