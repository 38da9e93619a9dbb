"""Input kinds: how each kind's user inputs become items, and how an in-memory example is stored.

An index is bound to one input kind (its encoder's ``input_kind``). :class:`FewShotIndex`
asks the kind registered here for the items of what a user passed, and for the bytes of the
copy it keeps of an in-memory example (so that ``reindex`` can embed it again later), and
never names a kind itself. A new kind registers one :class:`InputKind`; see
docs/ARCHITECTURE.md for the other pieces (preprocess, encoder subclass, batcher).
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fewshot.errors import InputError
from fewshot.inputs import IMAGE_SUFFIXES, SEQUENCE_SUFFIXES, InputItem, expand_inputs


@dataclass(frozen=True)
class InputKind:
    """``read(inputs) -> items`` (refusing files of another kind); ``stored(item) -> (bytes, suffix)``."""

    name: str
    read: Callable[[Any], list[InputItem]]
    stored: Callable[[InputItem], tuple[bytes, str]]


KINDS: dict[str, InputKind] = {}


def register_kind(kind: InputKind) -> InputKind:
    KINDS[kind.name] = kind
    return kind


def input_kind(name: str) -> InputKind:
    """The registered kind ``name``; an encoder of an unknown kind is refused with what is known."""
    try:
        return KINDS[name]
    except KeyError:
        raise InputError(f"unknown input kind {name!r}; known: {', '.join(sorted(KINDS))}") from None


def _refuse_foreign(items: list[InputItem], kind: str, own: tuple[str, ...], foreign: tuple[str, ...]) -> None:
    """A file of another kind's type (a stroke ``.txt`` given to an image index, say) gets a clear error."""
    for it in items:
        suffix = it.path.suffix.lower() if it.path is not None else None
        if suffix is not None and suffix not in own and (not foreign or suffix in foreign):
            raise InputError(f"{it.name}: this index holds {kind}s; it cannot take a {it.path.suffix} file")


def _read_images(inputs: Any) -> list[InputItem]:
    items = expand_inputs(inputs)
    _refuse_foreign(items, "image", IMAGE_SUFFIXES, SEQUENCE_SUFFIXES)
    return items


def _read_sequences(inputs: Any) -> list[InputItem]:
    items = expand_inputs(inputs, SEQUENCE_SUFFIXES)
    _refuse_foreign(items, "sequence", SEQUENCE_SUFFIXES, ())
    return items


@dataclass
class UploadedItem(InputItem):
    """An input received as a file's bytes (by ``fewshot serve``): ``value`` is what the encoder reads
    (image, array, text), ``data`` and ``suffix`` the file as sent, which is the stored copy, byte for
    byte as adding the file itself stores it (so duplicate checks and ``check`` see the same copy)."""

    data: bytes = b""
    suffix: str = ""


def _as_sent(stored: Callable[[InputItem], tuple[bytes, str]]) -> Callable[[InputItem], tuple[bytes, str]]:
    """A kind's ``stored``, except that an :class:`UploadedItem` is stored as the bytes that were sent."""
    def copy(item: InputItem) -> tuple[bytes, str]:
        return (item.data, item.suffix) if isinstance(item, UploadedItem) else stored(item)

    return copy


@_as_sent
def _png(item: InputItem) -> tuple[bytes, str]:
    from fewshot.inputs import to_pil

    buf = io.BytesIO()
    to_pil(item).save(buf, format="PNG")
    return buf.getvalue(), ".png"


@_as_sent
def _npy(item: InputItem) -> tuple[bytes, str]:
    buf = io.BytesIO()
    np.save(buf, np.asarray(item.value, dtype=np.float32), allow_pickle=False)
    return buf.getvalue(), ".npy"


def _read_text(inputs: Any) -> list[InputItem]:
    from fewshot.text_inputs import text_items

    return text_items(inputs)


@_as_sent
def _text_blob(item: InputItem) -> tuple[bytes, str]:
    return item.value.encode("utf-8"), ".txt"


register_kind(InputKind("image", _read_images, _png))
register_kind(InputKind("sequence", _read_sequences, _npy))
register_kind(InputKind("text", _read_text, _text_blob))
