"""Uploaded avatars: only real images, stored re-encoded.

The upload is decoded with Pillow and written back as a fresh 256 px PNG:
whatever the file carried besides pixels (metadata, a script in a comment,
a polyglot HTML/GIF) is gone, and the store only ever serves its own PNGs.
"""

from __future__ import annotations

import io
import secrets

from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ApplicationError
from store.models import Listing

AVATAR_SIDE = 256
ACCEPTED_FORMATS = {"PNG", "JPEG", "GIF", "WEBP"}
# Decoding a small file can still allocate a huge bitmap: refuse anything
# with more pixels than this before decoding it.
MAX_PIXELS = 4096 * 4096


class AvatarError(ApplicationError):
    status_code = 400
    error_type = "invalid_request_error"


def avatar_normalize(data: bytes) -> bytes:
    """A square ``AVATAR_SIDE`` px PNG of the uploaded image.

    Raises AvatarError when the file is too large, not an image, or not
    one of the accepted formats.
    """
    if len(data) > settings.STORE_AVATAR_MAX_BYTES:
        limit_kb = settings.STORE_AVATAR_MAX_BYTES // 1024
        raise AvatarError(f"The image is too large (at most {limit_kb} KB).")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.format not in ACCEPTED_FORMATS:
                raise AvatarError("Upload a PNG, JPEG, GIF or WebP image.")
            if probe.width * probe.height > MAX_PIXELS:
                raise AvatarError("The image has too many pixels.")
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)  # the first frame of an animation
            picture = ImageOps.exif_transpose(image).convert("RGBA")
    except AvatarError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise AvatarError("That file is not an image we can read.") from None
    square = ImageOps.fit(picture, (AVATAR_SIDE, AVATAR_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    square.save(out, format="PNG", optimize=True)
    return out.getvalue()


def listing_avatar_set(*, listing: Listing, data: bytes | None) -> Listing:
    """Replace (or with None, remove) the listing's uploaded avatar.

    Raises AvatarError for an unusable image (nothing changes then).
    """
    png = avatar_normalize(data) if data is not None else None
    old = listing.avatar_image.name if listing.avatar_image else ""
    if png is None:
        listing.avatar_image = ""  # type: ignore[assignment]
        listing.save(update_fields=["avatar_image", "updated_at"])
    else:
        # A new name per upload: browsers and proxies may cache the old one.
        name = f"{listing.pk}-{secrets.token_hex(6)}.png"
        listing.avatar_image.save(name, ContentFile(png), save=False)
        listing.save(update_fields=["avatar_image", "updated_at"])
    if old:
        listing.avatar_image.storage.delete(old)
    return listing
