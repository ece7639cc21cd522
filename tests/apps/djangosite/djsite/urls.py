from django.urls import include, path
from polls import views

urlpatterns = [
    path("", views.home),
    path("hello/", views.hello),
    path("polls/", include("polls.urls")),
]
