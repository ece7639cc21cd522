from django.urls import path
from library import views

urlpatterns = [
    path("books/", views.book_list),
    path("books/eager/", views.book_list_eager),
    path("books/<int:book_id>/", views.book_detail),
]
