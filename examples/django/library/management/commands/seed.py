from django.core.management.base import BaseCommand

from library.models import Author, Book


class Command(BaseCommand):
    help = "Twenty authors with one book each."

    def handle(self, *args: object, **options: object) -> None:
        Book.objects.all().delete()
        Author.objects.all().delete()
        for i in range(1, 21):
            author = Author.objects.create(id=i, name=f"Author {i}")
            Book.objects.create(id=i, title=f"Book {i}", author=author)
