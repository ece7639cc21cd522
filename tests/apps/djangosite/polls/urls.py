from django.urls import path

from polls import views

urlpatterns = [
    path("", views.index),
    path("eager/", views.index_eager),
    path("<int:question_id>/", views.detail),
    path("slow/", views.slow),
    path("cache/<int:round_no>/", views.cache_script),
    path("log/", views.log_line),
    path("boom/", views.boom),
    path("secret-error/", views.secret_error),
    path("pid/", views.pid),
    path("stream/", views.stream),
]
