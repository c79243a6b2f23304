from django.urls import path
from rest_framework_simplejwt.views import TokenRefreshView

from accounts import views
from accounts.serializers import TokenRefreshSerializer

urlpatterns = [
    path("register/", views.RegisterView.as_view(), name="auth-register"),
    path("token/", views.LoginView.as_view(), name="auth-token"),
    path(
        "token/refresh/",
        TokenRefreshView.as_view(serializer_class=TokenRefreshSerializer),
        name="auth-token-refresh",
    ),
    path("me/", views.MeView.as_view(), name="auth-me"),
    path("password/", views.PasswordChangeView.as_view(), name="auth-password"),
    path("logout/", views.LogoutView.as_view(), name="auth-logout"),
]
