"""Public object ids in OpenAI's shapes: ``asst_…``, ``file-…``, ``vsfb_…``.

Each prefix has a named module-level factory so model fields can use it as a
default and migrations can serialise it by reference.
"""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_LENGTH = 24  # 62**24 ≈ 2**143: unguessable, so ids are no enumeration oracle


# Random bytes map onto the alphabet by ``byte % 62``; bytes at or above the
# largest multiple of 62 are dropped (rejection sampling), so every
# character stays equally likely. One read of the system's random source per
# id: ``secrets.choice`` per character made 24 of them, 48 us an id against
# 3 us so (a run writes three ids on its way to the model).
_ACCEPT = 256 - 256 % len(_ALPHABET)
_TO_ALPHABET = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))
_REJECTED = bytes(range(_ACCEPT, 256))


def random_token(length: int = _LENGTH) -> str:
    token = b""
    while len(token) < length:
        # 8 spare bytes: a byte is rejected with p = 8/256, so one read
        # almost always suffices.
        token += secrets.token_bytes(length + 8).translate(_TO_ALPHABET, _REJECTED)
    return token[:length].decode("ascii")


def new_id(prefix: str) -> str:
    """``prefix`` includes its separator: ``new_id("asst_")``, ``new_id("file-")``."""
    return prefix + random_token()


def new_org_id() -> str:
    return new_id("org_")


def new_project_id() -> str:
    return new_id("proj_")


def new_key_id() -> str:
    return new_id("key_")


def new_assistant_id() -> str:
    return new_id("asst_")


def new_thread_id() -> str:
    return new_id("thread_")


def new_message_id() -> str:
    return new_id("msg_")


def new_run_id() -> str:
    return new_id("run_")


def new_step_id() -> str:
    return new_id("step_")


def new_file_id() -> str:
    return new_id("file-")


def new_upload_id() -> str:
    return new_id("upload_")


def new_part_id() -> str:
    return new_id("part_")


def new_vector_store_id() -> str:
    return new_id("vs_")


def new_file_batch_id() -> str:
    return new_id("vsfb_")


def new_vector_store_file_id() -> str:
    # Internal only: on the wire a vector store file is named by its file id.
    return new_id("vsf_")


def new_tool_call_id() -> str:
    return new_id("call_")
