from django.contrib import admin
from django.contrib.auth import login
from django.contrib.auth.models import User
from django.shortcuts import redirect
from django.urls import include, path


def test_login(request, username):
    """Test-only: log in as `username` and go to ?next= (headless Chromium cannot fill in the login form)."""
    login(request, User.objects.get(username=username), backend="django.contrib.auth.backends.ModelBackend")
    return redirect(request.GET.get("next", "/admin/"))


urlpatterns = [
    path("admin/", admin.site.urls),
    path("django_q/metrics/", include("django_q.urls")),
    path("test-login/<str:username>/", test_login),
]
