from django.core.management.base import BaseCommand

from polls.models import Choice, Question


class Command(BaseCommand):
    help = "Ten questions with one choice each."

    def handle(self, *args: object, **options: object) -> None:
        Choice.objects.all().delete()
        Question.objects.all().delete()
        for i in range(1, 11):
            question = Question.objects.create(id=i, question_text=f"question {i}")
            Choice.objects.create(question=question, choice_text=f"choice {i}")
