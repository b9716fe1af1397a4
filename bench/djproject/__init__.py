"""A minimal Django project for Django Q and django-q2; the settings module picks the system."""
