from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction

from core.models import ApiKey, Organization, Project
from core.services.keys import IssuedKey, api_key_create, api_key_revoke
from core.services.tenancy import project_create
from store.models import BuilderProfile, Membership

PERSONAL_PROJECT = "Personal"


@transaction.atomic
def account_signup(*, username: str, password: str, email: str = "") -> User:
    """A web user with a personal organization and project (owned through a
    Membership) and a builder profile named after them.

    The caller has validated the username (unique) and the password.
    """
    user = User.objects.create_user(username=username, email=email, password=password)
    # Organization names are unique; usernames are too, and the user id
    # keeps a later rename from colliding with another user's workspace.
    org = Organization.objects.create(name=f"{username} (user {user.pk})")
    project = project_create(organization=org, name=PERSONAL_PROJECT)
    Membership.objects.create(user=user, project=project, role=Membership.Role.OWNER)
    BuilderProfile.objects.create(user=user, display_name=username)
    return user


def builder_profile_update(
    *, user: User, display_name: str, bio: str, links: list[str]
) -> BuilderProfile:
    profile, _ = BuilderProfile.objects.update_or_create(
        user=user, defaults={"display_name": display_name, "bio": bio, "links": links}
    )
    return profile


@transaction.atomic
def project_add(*, user: User, organization: Organization, name: str) -> Project:
    """A new project in ``organization``, owned by ``user``. The caller has
    checked that ``user`` may add projects there (is a member of one)."""
    project = project_create(organization=organization, name=name)
    Membership.objects.create(user=user, project=project, role=Membership.Role.OWNER)
    return project


def web_api_key_create(*, project: Project, name: str) -> IssuedKey:
    """A key for the API, made from the store. The raw key is in the result
    only (only its hash is stored): the page shows it once. The caller has
    checked that the user is a member of ``project``."""
    return api_key_create(project=project, name=name)


def web_api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """The caller has checked that the key is one of the user's projects'."""
    return api_key_revoke(api_key=api_key)
