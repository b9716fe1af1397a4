from django.db import models


class Hooked(models.Model):
    task_id = models.CharField(max_length=32)
    result = models.TextField()
    success = models.BooleanField()
