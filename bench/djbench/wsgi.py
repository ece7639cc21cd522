import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djbench.settings")

from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

from djbench.models import seed  # noqa: E402

seed()
