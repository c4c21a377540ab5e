"""Store pages: validate, check who may see what, delegate to services."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from assistants.models import Assistant
from assistants.runs.streaming import sse_response
from assistants.services.assistant import AssistantCreateInput, assistant_create
from core.errors import ApplicationError
from core.models import ApiKey, LanguageModel, Project
from core.views import not_found as core_not_found
from store import selectors
from store.forms import (
    ApiKeyForm,
    AssistantForm,
    ChatForm,
    ListingForm,
    ProfileForm,
    ProjectForm,
    RatingForm,
    ReportForm,
    SignupForm,
)
from store.markdown import cited_file_ids, render_content, shown_file_ids
from store.models import BuilderProfile, Conversation, Listing
from store.services.account import (
    account_signup,
    builder_profile_update,
    project_add,
    web_api_key_create,
    web_api_key_revoke,
)
from store.services.avatar import listing_avatar_set
from store.services.conversation import (
    conversation_reply,
    conversation_share,
    conversation_start,
)
from store.services.listing import (
    ListingFields,
    listing_create,
    listing_duplicate,
    listing_update,
    rating_upsert,
    report_create,
)
from store.services.quota import quota_consume
from store.services.throttle import attempt_count, attempts_exceeded, client_ip
from store.services.versions import change_source
from store.streaming import visitor_events

_STREAM_ID = re.compile(r"^\d+-\d+$")


PROJECT_SESSION_KEY = "store_project"


def _project(request: HttpRequest) -> Project:
    """The signed-in user's current project (the project switcher's)."""
    project = selectors.current_project(
        user=request.user, chosen=request.session.get(PROJECT_SESSION_KEY)
    )
    if project is None:
        raise Http404("No project")
    return project


def _session_key(request: HttpRequest) -> str:
    if not request.session.session_key:
        request.session.save()
    return request.session.session_key or ""


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _client_ip(request: HttpRequest) -> str:
    # X-Forwarded-For only from TRUSTED_PROXIES: otherwise it is the
    # client's to forge (and with it, every per-IP quota).
    return client_ip(
        remote_addr=str(request.META.get("REMOTE_ADDR") or ""),
        forwarded_for=str(request.META.get("HTTP_X_FORWARDED_FOR") or ""),
        trusted=settings.TRUSTED_PROXIES,
    )


SIGNUP_WINDOW = 3600
LOGIN_WINDOW = 15 * 60


def _too_many(request: HttpRequest, template: str, form: Any) -> HttpResponse:
    return render(
        request,
        template,
        {
            "form": form,
            "throttled": "Too many attempts from here. Wait a few minutes and "
            "try again.",
        },
        status=429,
    )


class ThrottledLoginView(auth_views.LoginView):
    """Django's log-in, refused for a while after too many failures from one
    IP or for one username (password guessing)."""

    template_name = "store/accounts/login.html"

    def _blocked(self) -> bool:
        limit = settings.STORE_LOGIN_FAILURES_PER_15_MIN
        username = str(self.request.POST.get("username", ""))[:150].lower()
        return any(
            attempts_exceeded(kind=kind, who=who, limit=limit, window=LOGIN_WINDOW)
            for kind, who in (
                ("login-ip", _client_ip(self.request)),
                ("login-user", username),
            )
            if who
        )

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if self._blocked():
            return _too_many(request, self.template_name, self.get_form())
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        username = str(self.request.POST.get("username", ""))[:150].lower()
        attempt_count(
            kind="login-ip", who=_client_ip(self.request), window=LOGIN_WINDOW
        )
        if username:
            attempt_count(kind="login-user", who=username, window=LOGIN_WINDOW)
        return super().form_invalid(form)


# --- Accounts -----------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    template = "store/accounts/signup.html"
    if request.method == "POST":
        ip = _client_ip(request)
        if attempts_exceeded(
            kind="signup",
            who=ip,
            limit=settings.STORE_SIGNUPS_PER_IP_HOUR,
            window=SIGNUP_WINDOW,
        ):
            return _too_many(request, template, form)
    if request.method == "POST" and form.is_valid():
        attempt_count(kind="signup", who=_client_ip(request), window=SIGNUP_WINDOW)
        user = account_signup(
            username=form.cleaned_data["username"],
            email=form.cleaned_data.get("email") or "",
            password=form.cleaned_data["password1"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("store:dashboard")
    return render(request, template, {"form": form})


# --- Browsing -------------------------------------------------------------------


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "store/home.html",
        {
            "featured": selectors.listings_featured(),
            "trending": selectors.listings_trending(),
            "categories": Listing.Category.choices,
        },
    )


@require_GET
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:200]
    category = request.GET.get("category", "")
    if category not in Listing.Category.values:
        category = ""
    return render(
        request,
        "store/search.html",
        {
            "query": query,
            "category": category,
            "categories": Listing.Category.choices,
            "results": selectors.listings_search(query=query, category=category),
        },
    )


@require_GET
def listing_detail(request: HttpRequest, slug: str) -> HttpResponse:
    listing = selectors.listing_for_viewer(slug=slug, user=request.user)
    owner = selectors.is_owner(listing=listing, user=request.user)
    own_rating = (
        listing.ratings.filter(user=request.user).first()
        if request.user.is_authenticated
        else None
    )
    return render(
        request,
        "store/listing.html",
        {
            "listing": listing,
            "is_owner": owner,
            # The product rule: instructions are the builder's unless they
            # chose to show them.
            "instructions": (
                listing.assistant.instructions
                if owner or listing.show_instructions
                else None
            ),
            "stats": selectors.listing_stats(listing=listing),
            "reviews": listing.ratings.select_related("user").order_by("-updated_at")[
                :20
            ],
            "rating_form": RatingForm(
                initial={"stars": own_rating.stars, "review": own_rating.review}
                if own_rating
                else None
            ),
            "report_form": ReportForm(),
        },
    )


@login_required
@require_POST
def listing_rate(request: HttpRequest, slug: str) -> HttpResponse:
    listing = selectors.listing_for_viewer(slug=slug, user=request.user)
    form = RatingForm(request.POST)
    if form.is_valid():
        assert isinstance(request.user, User)
        rating_upsert(
            listing=listing,
            user=request.user,
            stars=form.cleaned_data["stars"],
            review=form.cleaned_data["review"],
        )
        flash.success(request, "Thanks for rating.")
    else:
        flash.error(request, "Choose from one to five stars.")
    return redirect("store:listing", slug=slug)


@login_required
@require_POST
def listing_duplicate_view(request: HttpRequest, slug: str) -> HttpResponse:
    listing = selectors.listing_for_viewer(slug=slug, user=request.user)
    project = _project(request)
    if not listing.allow_duplicate:
        raise Http404("This assistant cannot be copied")
    try:
        with change_source(source="store", author=request.user.get_username()):
            copy = listing_duplicate(listing=listing, project=project)
    except ApplicationError as exc:
        return _chat_error(request, exc.message, exc.status_code)
    flash.success(request, f"Copied into your project as {copy.name}.")
    return redirect(f"{reverse('store:publish')}?assistant={copy.id}")


@require_POST
def listing_report(request: HttpRequest, slug: str) -> HttpResponse:
    listing = selectors.listing_for_viewer(slug=slug, user=request.user)
    form = ReportForm(request.POST)
    if form.is_valid():
        report_create(
            listing=listing,
            reporter=request.user if isinstance(request.user, User) else None,
            reason=form.cleaned_data["reason"],
        )
        flash.success(request, "Thanks, an operator will look at it.")
    return redirect("store:listing", slug=slug)


@require_GET
def builder_profile(request: HttpRequest, username: str) -> HttpResponse:
    user = get_object_or_404(User, username=username)
    profile = BuilderProfile.objects.filter(user=user).first()
    return render(
        request,
        "store/builder.html",
        {
            "builder": user,
            "profile": profile,
            "listings": selectors.listings_of_builder(user=user),
        },
    )


@require_GET
def sitemap(request: HttpRequest) -> HttpResponse:
    # Built as a string: a template with a {% url %} per entry took 1.5 s
    # for 10,000 listings, this takes a few ms.
    base = request.build_absolute_uri(reverse("store:listing", args=["SLUG"]))
    head, tail = (escape(part) for part in base.split("SLUG"))
    rows = selectors.listings_public_for_sitemap()
    body = "".join(
        f"<url><loc>{head}{slug}{tail}</loc><lastmod>{updated:%Y-%m-%d}</lastmod></url>\n"
        for slug, updated in rows
    )
    return HttpResponse(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{body}</urlset>\n",
        content_type="application/xml",
    )


# --- Building -------------------------------------------------------------------


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    project = _project(request)
    assistants = (
        Assistant.objects.filter(project=project)
        .select_related("listing")
        .order_by("-seq")
    )
    return render(
        request,
        "store/dashboard.html",
        {"assistants": assistants, "project": project},
    )


@login_required
@require_POST
def project_switch(request: HttpRequest) -> HttpResponse:
    project = selectors.projects_of(user=request.user).filter(
        pk=request.POST.get("project", "")
    )
    if not project.exists():
        raise Http404("No such project")
    request.session[PROJECT_SESSION_KEY] = request.POST["project"]
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = reverse("store:dashboard")
    return redirect(next_url)


@login_required
@require_POST
def project_new(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST)
    if not form.is_valid():
        flash.error(request, "Give the project a name.")
        return redirect("store:api_keys")
    assert isinstance(request.user, User)
    project = project_add(
        user=request.user,
        organization=_project(request).organization,
        name=form.cleaned_data["name"],
    )
    request.session[PROJECT_SESSION_KEY] = project.pk
    flash.success(request, f"Project {project.name} created; you are working in it.")
    return redirect("store:api_keys")


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """The current project's API keys. A new key's secret is in this one
    response only (rendered, not redirected: nothing keeps it afterwards)."""
    project = _project(request)
    form = ApiKeyForm(request.POST or None)
    issued = None
    if request.method == "POST" and form.is_valid():
        issued = web_api_key_create(project=project, name=form.cleaned_data["name"])
        form = ApiKeyForm()
    response = render(
        request,
        "store/api_keys.html",
        {
            "project": project,
            "keys": selectors.api_keys_of(project=project),
            "form": form,
            "project_form": ProjectForm(),
            "issued": issued,
        },
    )
    # The page may hold a secret: never cached by the browser or a proxy.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def api_key_revoke(request: HttpRequest, key_id: str) -> HttpResponse:
    key = get_object_or_404(
        ApiKey.objects.filter(project__in=selectors.projects_of(user=request.user)),
        pk=key_id,
    )
    web_api_key_revoke(api_key=key)
    flash.success(request, f"Key {key.redacted} revoked: it no longer works.")
    return redirect("store:api_keys")


@login_required
@require_http_methods(["GET", "POST"])
def assistant_new(request: HttpRequest) -> HttpResponse:
    project = _project(request)
    models = list(
        LanguageModel.objects.filter(is_active=True).values_list("id", flat=True)
    )
    form = AssistantForm(request.POST or None, models=models)
    if request.method == "POST" and form.is_valid():
        try:
            with change_source(source="store", author=request.user.get_username()):
                assistant = assistant_create(
                    project=project, data=AssistantCreateInput(**form.cleaned_data)
                )
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect(f"{reverse('store:publish')}?assistant={assistant.id}")
    return render(request, "store/assistant_new.html", {"form": form})


def _listing_fields(form: ListingForm) -> ListingFields:
    data = form.cleaned_data
    return ListingFields(
        slug=data["slug"],
        category=data["category"],
        short_description=data["short_description"],
        avatar_emoji=data["avatar_emoji"] or "🤖",
        avatar_color=data["avatar_color"],
        starters=data["starters"],
        visibility=data["visibility"],
        show_instructions=data["show_instructions"],
        allow_duplicate=data["allow_duplicate"],
        daily_run_limit=data["daily_run_limit"],
    )


def _save_avatar(listing: Listing, form: ListingForm) -> None:
    # The form has validated the image (listing_avatar_set re-encodes it).
    if form.cleaned_data.get("avatar_upload"):
        listing_avatar_set(listing=listing, data=form.cleaned_data["avatar_upload"])
    elif form.cleaned_data.get("avatar_remove") and listing.avatar_image:
        listing_avatar_set(listing=listing, data=None)


@require_GET
def listing_avatar(request: HttpRequest, slug: str) -> FileResponse:
    """The listing's uploaded avatar (a PNG the store wrote itself), to
    whoever may see the listing."""
    listing = selectors.listing_for_viewer(slug=slug, user=request.user)
    if not listing.avatar_image:
        raise Http404("No avatar")
    response = FileResponse(listing.avatar_image.open("rb"), content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    # Pages link it with ?v=<upload name>, so a new upload is a new URL.
    response["Cache-Control"] = (
        "public, max-age=86400"
        if listing.visibility == Listing.Visibility.PUBLIC
        else "private, max-age=86400"
    )
    return response


@login_required
@require_http_methods(["GET", "POST"])
def publish(request: HttpRequest) -> HttpResponse:
    assistant_id = request.GET.get("assistant") or request.POST.get("assistant", "")
    assistant: Assistant = get_object_or_404(
        selectors.assistants_of_user(user=request.user), pk=assistant_id
    )
    if hasattr(assistant, "listing"):
        return redirect("store:listing_edit", slug=assistant.listing.slug)
    form = ListingForm(
        request.POST or None,
        request.FILES or None,
        initial={
            "slug": re.sub(r"[^a-z0-9]+", "-", (assistant.name or "").lower()).strip(
                "-"
            ),
            "short_description": assistant.description or "",
        },
    )
    if request.method == "POST" and form.is_valid():
        assert isinstance(request.user, User)
        listing = listing_create(
            user=request.user, assistant=assistant, data=_listing_fields(form)
        )
        _save_avatar(listing, form)
        return redirect("store:listing", slug=listing.slug)
    return render(request, "store/publish.html", {"form": form, "assistant": assistant})


@login_required
@require_http_methods(["GET", "POST"])
def listing_edit(request: HttpRequest, slug: str) -> HttpResponse:
    listing = selectors.listing_for_viewer(slug=slug, user=request.user)
    if not selectors.is_owner(listing=listing, user=request.user):
        raise Http404("No such listing")
    initial = {
        "slug": listing.slug,
        "category": listing.category,
        "short_description": listing.short_description,
        "avatar_emoji": listing.avatar_emoji,
        "avatar_color": listing.avatar_color,
        "starters": "\n".join(listing.starters),
        "visibility": listing.visibility,
        "show_instructions": listing.show_instructions,
        "allow_duplicate": listing.allow_duplicate,
        "daily_run_limit": listing.daily_run_limit,
    }
    form = ListingForm(
        request.POST or None, request.FILES or None, initial=initial, listing=listing
    )
    if request.method == "POST" and form.is_valid():
        listing_update(listing=listing, data=_listing_fields(form))
        _save_avatar(listing, form)
        return redirect("store:listing", slug=listing.slug)
    return render(
        request,
        "store/publish.html",
        {"form": form, "assistant": listing.assistant, "listing": listing},
    )


@login_required
@require_http_methods(["GET", "POST"])
def profile_edit(request: HttpRequest) -> HttpResponse:
    assert isinstance(request.user, User)
    profile = BuilderProfile.objects.filter(user=request.user).first()
    initial = (
        {
            "display_name": profile.display_name,
            "bio": profile.bio,
            "links": "\n".join(profile.links),
        }
        if profile
        else {"display_name": request.user.username}
    )
    form = ProfileForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        builder_profile_update(user=request.user, **form.cleaned_data)
        return redirect("store:builder", username=request.user.username)
    return render(request, "store/profile_edit.html", {"form": form})


# --- Chat ------------------------------------------------------------------------


def _conversation(request: HttpRequest, conversation_id: str) -> Conversation:
    return selectors.conversation_for_visitor(
        conversation_id=conversation_id,
        user=request.user,
        session_key=request.session.session_key,
    )


def _start_or_reply(
    request: HttpRequest, listing: Listing, conversation: Conversation | None
) -> HttpResponse:
    form = ChatForm(request.POST)
    if not form.is_valid():
        return _chat_error(request, "Write a message first.", 400)
    user_id = request.user.pk if request.user.is_authenticated else None
    try:
        quota_consume(
            listing=listing,
            user_id=user_id,
            ip=_client_ip(request),
            is_owner=selectors.is_owner(listing=listing, user=request.user),
        )
        if conversation is None:
            conversation, run = conversation_start(
                listing=listing,
                user_id=user_id,
                session_key=_session_key(request),
                text=form.cleaned_data["text"],
            )
        else:
            run = conversation_reply(
                conversation=conversation, text=form.cleaned_data["text"]
            )
    except ApplicationError as exc:
        return _chat_error(request, exc.message, exc.status_code)
    url = reverse("store:conversation", args=[conversation.pk])
    if _wants_json(request):
        return JsonResponse(
            {
                "conversation_url": url,
                "events_url": reverse(
                    "store:conversation_events", args=[conversation.pk, run.id]
                ),
            }
        )
    return redirect(url)


def _chat_error(request: HttpRequest, message: str, status: int) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": message}, status=status)
    return render(request, "store/error.html", {"message": message}, status=status)


@require_http_methods(["GET", "POST"])
def chat(request: HttpRequest, slug: str) -> HttpResponse:
    listing = selectors.listing_for_viewer(slug=slug, user=request.user)
    if request.method == "POST":
        return _start_or_reply(request, listing, None)
    return render(
        request,
        "store/chat.html",
        {"listing": listing, "form": ChatForm(), "messages_html": []},
    )


def _messages_html(
    conversation: Conversation, file_url: str
) -> list[tuple[str, object]]:
    messages = selectors.conversation_messages(conversation=conversation)
    names = selectors.file_names(
        project_id=conversation.listing.assistant.project_id,
        file_ids=set().union(*(cited_file_ids(m.content) for m in messages)),
    )
    return [
        (m.role, render_content(m.content, file_url=file_url, file_names=names))
        for m in messages
    ]


@require_http_methods(["GET", "POST"])
def conversation(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conv = _conversation(request, conversation_id)
    listing = conv.listing
    if request.method == "POST":
        # Re-checked: the listing may have gone private since.
        selectors.listing_for_viewer(slug=listing.slug, user=request.user)
        return _start_or_reply(request, listing, conv)
    file_url = reverse("store:conversation_file", args=[conv.pk, "FILE"]).replace(
        "FILE", "{id}"
    )
    return render(
        request,
        "store/chat.html",
        {
            "listing": listing,
            "conversation": conv,
            "form": ChatForm(),
            "messages_html": _messages_html(conv, file_url),
            "share_url": request.build_absolute_uri(
                reverse("store:shared", args=[conv.share_token])
            )
            if conv.share_token
            else None,
        },
    )


@require_GET
def conversation_events(
    request: HttpRequest, conversation_id: str, run_id: str
) -> HttpResponseBase:
    conv = _conversation(request, conversation_id)
    run = selectors.conversation_run(conversation=conv, run_id=run_id)
    after = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0-0"
    if not _STREAM_ID.match(after):
        after = "0-0"
    file_url = reverse("store:conversation_file", args=[conv.pk, "FILE"]).replace(
        "FILE", "{id}"
    )
    return sse_response(
        visitor_events(
            run.id,
            after=after,
            file_url=file_url,
            project_id=conv.listing.assistant.project_id,
        )
    )


@require_POST
def conversation_share_view(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conv = _conversation(request, conversation_id)
    conversation_share(conversation=conv)
    return redirect("store:conversation", conversation_id=conv.pk)


def _file_response(conv: Conversation, file_id: str) -> FileResponse:
    """A file the conversation's assistant produced (a chart, a CSV), only
    if one of the conversation's messages shows or links it. Never the
    project's other files, and never through /v1 (which needs a key)."""
    from tools.models import File

    shown = any(
        file_id in shown_file_ids(m.content)
        for m in selectors.conversation_messages(conversation=conv)
    )
    file = File.objects.filter(
        pk=file_id, project_id=conv.listing.assistant.project_id
    ).first()
    if not shown or file is None:
        raise Http404("No such file")
    is_png = file.content.open("rb").read(8) == b"\x89PNG\r\n\x1a\n"
    file.content.seek(0)
    # Only a real PNG is shown inline; anything else is a download, so
    # that no file the model wrote is ever rendered as a page of ours.
    response = FileResponse(
        file.content,
        as_attachment=not is_png,
        filename=file.filename,
        content_type="image/png" if is_png else "application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
def conversation_file(
    request: HttpRequest, conversation_id: str, file_id: str
) -> FileResponse:
    return _file_response(_conversation(request, conversation_id), file_id)


def _shared_conversation(token: str) -> Conversation:
    conv = (
        Conversation.objects.select_related("listing__assistant")
        .filter(share_token=token)
        .first()
    )
    if conv is None or conv.listing.unlisted_by_operator:
        raise Http404("No such conversation")
    return conv


@require_GET
def shared(request: HttpRequest, token: str) -> HttpResponse:
    conv = _shared_conversation(token)
    file_url = reverse("store:shared_file", args=[token, "FILE"]).replace(
        "FILE", "{id}"
    )
    return render(
        request,
        "store/shared.html",
        {
            "listing": conv.listing,
            "conversation": conv,
            "messages_html": _messages_html(conv, file_url),
        },
    )


@require_GET
def shared_file(request: HttpRequest, token: str, file_id: str) -> FileResponse:
    return _file_response(_shared_conversation(token), file_id)


def page_not_found(
    request: HttpRequest, exception: Exception | None = None
) -> HttpResponse:
    """The 404 handler: a store page under /store/, else the API's JSON."""
    if request.path.startswith("/store/"):
        return render(request, "store/404.html", status=404)
    return core_not_found(request, exception)
