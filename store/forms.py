from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.core.validators import RegexValidator

from store.models import Listing
from store.services.avatar import AvatarError, avatar_normalize
from store.services.conversation import MESSAGE_MAX_CHARS


class SignupForm(UserCreationForm):  # type: ignore[type-arg]
    email = forms.EmailField(required=False)

    class Meta:
        model = User
        fields = ("username", "email")


class AssistantForm(forms.Form):
    name = forms.CharField(max_length=256)
    description = forms.CharField(max_length=512, required=False)
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}), max_length=256_000, required=False
    )
    model = forms.ChoiceField(choices=[])

    def __init__(self, *args: Any, models: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m, m) for m in models]  # type: ignore[attr-defined]


class ListingForm(forms.Form):
    slug = forms.SlugField(
        max_length=80,
        label="Address",
        help_text="The listing's page is /store/g/<address>: letters, digits "
        "and dashes.",
    )
    category = forms.ChoiceField(choices=Listing.Category.choices)
    short_description = forms.CharField(max_length=300, required=False)
    avatar_emoji = forms.CharField(max_length=8, required=False, initial="🤖")
    avatar_color = forms.CharField(
        max_length=7,
        initial="#4f46e5",
        validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "A colour like #4f46e5.")],
        widget=forms.TextInput(attrs={"type": "color"}),
    )
    avatar_upload = forms.FileField(
        required=False,
        label="Avatar image",
        help_text="Optional: a PNG, JPEG, GIF or WebP picture, shown instead of "
        "the emoji (cropped to a square).",
        widget=forms.ClearableFileInput(
            attrs={"accept": "image/png,image/jpeg,image/gif,image/webp"}
        ),
    )
    avatar_remove = forms.BooleanField(
        required=False, label="Remove the avatar image (use the emoji)"
    )
    starters = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        required=False,
        help_text="Conversation starters, one per line (up to four).",
        max_length=2000,
    )
    visibility = forms.ChoiceField(choices=Listing.Visibility.choices)
    show_instructions = forms.BooleanField(
        required=False, help_text="Let visitors read the assistant's instructions."
    )
    allow_duplicate = forms.BooleanField(
        required=False,
        help_text="Let signed-in visitors copy this assistant, instructions "
        "included, into their own project.",
    )
    daily_run_limit = forms.IntegerField(
        min_value=0,
        required=False,
        help_text="Runs the public may start per day (empty: no limit).",
    )

    def __init__(self, *args: Any, listing: Listing | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.listing = listing
        if listing is None or not listing.avatar_image:
            del self.fields["avatar_remove"]  # nothing to remove

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data["slug"]
        taken = Listing.objects.filter(slug=slug)
        if self.listing is not None:
            taken = taken.exclude(pk=self.listing.pk)
        if taken.exists():
            raise forms.ValidationError("That address is taken.")
        return slug

    def clean_avatar_upload(self) -> bytes | None:
        upload = self.cleaned_data.get("avatar_upload")
        if not upload:
            return None
        # Read one byte past the limit: enough to know it is too large.
        data: bytes = upload.read(settings.STORE_AVATAR_MAX_BYTES + 1)
        try:
            avatar_normalize(data)
        except AvatarError as exc:
            raise forms.ValidationError(exc.message) from None
        return data

    def clean_starters(self) -> list[str]:
        lines = [ln.strip() for ln in self.cleaned_data["starters"].splitlines()]
        return [ln[:200] for ln in lines if ln][:4]


class RatingForm(forms.Form):
    stars = forms.TypedChoiceField(
        choices=[(i, "★" * i) for i in range(5, 0, -1)], coerce=int
    )
    review = forms.CharField(
        max_length=1000,
        required=False,
        widget=forms.Textarea(
            attrs={"rows": 3, "placeholder": "A short review (optional)"}
        ),
    )


class ReportForm(forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))


class ChatForm(forms.Form):
    text = forms.CharField(
        max_length=MESSAGE_MAX_CHARS,
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Message…"}),
    )


class ProfileForm(forms.Form):
    display_name = forms.CharField(max_length=80)
    bio = forms.CharField(
        max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 4})
    )
    links = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One http(s) address per line.",
    )

    def clean_links(self) -> list[str]:
        urls = [u.strip() for u in self.cleaned_data["links"].splitlines() if u.strip()]
        for url in urls:
            if not url.lower().startswith(("http://", "https://")):
                raise forms.ValidationError(f"Not an http(s) address: {url}")
        return urls[:5]


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=256,
        required=False,
        help_text="To recognise the key later, e.g. where it is used.",
    )


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=256, label="New project")
