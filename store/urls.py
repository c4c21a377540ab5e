from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from store import views

app_name = "store"

urlpatterns = [
    path("", views.home, name="home"),
    path("search", views.search, name="search"),
    path("sitemap.xml", views.sitemap, name="sitemap"),
    path("accounts/signup", views.signup, name="signup"),
    path("accounts/login", views.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout", auth_views.LogoutView.as_view(), name="logout"),
    path("me", views.dashboard, name="dashboard"),
    path("me/assistants/new", views.assistant_new, name="assistant_new"),
    path("me/publish", views.publish, name="publish"),
    path("me/profile", views.profile_edit, name="profile_edit"),
    path("me/keys", views.api_keys, name="api_keys"),
    path("me/keys/<str:key_id>/revoke", views.api_key_revoke, name="api_key_revoke"),
    path("me/project", views.project_switch, name="project_switch"),
    path("me/projects/new", views.project_new, name="project_new"),
    path("u/<str:username>", views.builder_profile, name="builder"),
    path("g/<slug:slug>", views.listing_detail, name="listing"),
    path("g/<slug:slug>/edit", views.listing_edit, name="listing_edit"),
    path("g/<slug:slug>/avatar.png", views.listing_avatar, name="listing_avatar"),
    path("g/<slug:slug>/rate", views.listing_rate, name="listing_rate"),
    path("g/<slug:slug>/report", views.listing_report, name="listing_report"),
    path(
        "g/<slug:slug>/duplicate",
        views.listing_duplicate_view,
        name="listing_duplicate",
    ),
    path("g/<slug:slug>/chat", views.chat, name="chat"),
    path("c/<str:conversation_id>", views.conversation, name="conversation"),
    path(
        "c/<str:conversation_id>/runs/<str:run_id>/events",
        views.conversation_events,
        name="conversation_events",
    ),
    path(
        "c/<str:conversation_id>/share",
        views.conversation_share_view,
        name="conversation_share",
    ),
    path(
        "c/<str:conversation_id>/files/<str:file_id>",
        views.conversation_file,
        name="conversation_file",
    ),
    path("s/<str:token>", views.shared, name="shared"),
    path("s/<str:token>/files/<str:file_id>", views.shared_file, name="shared_file"),
]
