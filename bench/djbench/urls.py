from django.urls import path

from djbench import views

urlpatterns = [
    path("hello", views.hello),
    path("items/<int:item_id>", views.item),
    path("db", views.db),
]
