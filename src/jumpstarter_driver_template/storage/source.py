"""What a write reads: the image's bytes, and what tells a whole image from a cut-off one.

A card must never reach the device holding part of an image, so every source says how its end is checked:

- a **length** the client declared (a local file's size) or the server's `Content-Length`: exactly that many
  bytes must arrive;
- a **compressed** image (`flash --compression xz`): the decompressor must reach the format's end marker;
- an HTTP body sent in chunks: the HTTP client checks its last chunk;
- none of these (upstream's bare client, an HTTP/1.0 server that closes the connection to end the body): the
  image is written, and reported `unverified`.

Upstream 0.9 decompresses a resource on the exporter (`jumpstarter.streams.encoding`) without checking the end
marker, and its HTTP download hides the response's headers and stalls for up to two hours. This module takes the
raw bytes instead: through `Driver.resource` for a client's stream, and with aiohttp (which upstream uses for
the same download) for a URL, so the driver sees the status, the length and every byte as it arrives.
"""

from __future__ import annotations

import lzma
import sys
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from jumpstarter.common.resources import ClientStreamResource, PresignedRequestResource, Resource
from jumpstarter.driver import Driver
from jumpstarter.streams.encoding import Compression, create_decompressor
from pydantic import TypeAdapter
from yarl import URL

if sys.version_info >= (3, 14):  # upstream's encoding module imports zstd the same way
    from compression import zstd
else:
    from backports import zstd

PIECE = 1024 * 1024
"""Most bytes a decompressor returns per call: a 64 KiB message of an xz image of zeros can expand to gigabytes."""
MAX_REDIRECTS = 10
"""Redirects a download follows, as upstream's does."""
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass(kw_only=True)
class Source:
    """An image's bytes as they arrive (compressed, if they are), and how its end is checked."""

    chunks: AsyncIterator[bytes]
    name: str
    """The source in a user's words: "the client's file", or the URL without its query (which may hold a key)."""
    length: int | None = None
    """Bytes that must arrive, when the client or the server said."""
    framed: bool = False
    """The transport checks the end itself (HTTP chunked encoding)."""
    compression: Compression | None = None

    @property
    def checked(self) -> bool:
        """Whether the end of the image can be checked: a length, a compression end marker, or the transport's own."""
        return self.length is not None or self.compression is not None or self.framed


@asynccontextmanager
async def open_source(
    driver: Driver, handle: Any, length: int | None, compression: Compression | None, connect_timeout: float
) -> AsyncIterator[Source]:
    """Open the resource `handle` as a Source: a URL is requested here, so a bad status fails before any switch."""
    resource = TypeAdapter(Resource).validate_python(handle)
    match resource:
        case ClientStreamResource(x_jmp_content_encoding=encoding):
            # Upstream's client names the compression in the handle, and `resource()` would decompress it:
            # open the raw stream instead, and decompress with the end check.
            raw = resource.model_copy(update={"x_jmp_content_encoding": None}).model_dump(mode="json")
            async with driver.resource(raw) as stream:  # type: ignore[arg-type]  # annotated str, takes a handle
                yield Source(
                    chunks=aiter(stream),
                    name="the client's file",
                    length=length,
                    compression=compression or (Compression(encoding) if encoding else None),
                )
        case PresignedRequestResource(method="GET"):
            async with _download(resource, connect_timeout) as (response, name):
                # aiohttp ends a body cut short of its Content-Length or its last chunk with an error.
                declared = response.content_length if "Content-Encoding" not in response.headers else None
                if length is not None and declared is not None and length != declared:
                    raise ValueError(f"{name} declares {declared} bytes, the client said {length}")
                yield Source(
                    chunks=_body(response, name),
                    name=name,
                    length=length if length is not None else declared,
                    framed=declared is not None or response.headers.get("Transfer-Encoding", "").lower() == "chunked",
                    compression=compression,
                )
        case _:
            raise ValueError(f"a write reads a source, and {resource.kind} {resource.method} is not one")


@asynccontextmanager
async def _download(
    request: PresignedRequestResource, connect_timeout: float
) -> AsyncIterator[tuple[aiohttp.ClientResponse, str]]:
    """GET the URL, following redirects by hand as upstream does (aiohttp's own would decode %40 in them)."""
    url, headers = URL(request.url, encoded=True), request.headers
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)  # the driver times each read itself
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(MAX_REDIRECTS + 1):
                name = _public(str(url))
                async with session.get(url, headers=headers, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        if not (location := response.headers.get("Location")):
                            raise RuntimeError(f"{name} answered HTTP {response.status}, missing Location header")
                        target = url.join(URL(location, encoded=True))
                        if target.origin() != url.origin():
                            headers = {}  # a signed request's headers are for its own server only
                        url = target
                        continue
                    if response.status >= 400:
                        raise RuntimeError(f"{name} answered HTTP {response.status} {response.reason}")
                    yield response, name
                    return
            raise RuntimeError(f"Too many redirects ({MAX_REDIRECTS}) from {_public(request.url)}")
    except aiohttp.ClientError as e:
        raise RuntimeError(f"cannot download {_public(str(url))}: {_cause(e)}") from None


async def _body(response: aiohttp.ClientResponse, name: str) -> AsyncIterator[bytes]:
    """The response's body as it arrives; a body cut short (of its Content-Length, its last chunk) is an error."""
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except aiohttp.ClientError as e:
        raise RuntimeError(f"the download of {name} broke off: {_cause(e)}") from None


def _public(url: str) -> str:
    """A URL as logs and errors may show it: without its query, where signed URLs keep their key."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="[REDACTED]" if parts.query else ""))


def _cause(error: BaseException) -> str:
    """aiohttp's error in words: its message, or its type when it has none."""
    return str(error) or type(error).__name__


class Decoder:
    """Decompress one format in bounded pieces, and tell whether the data reached the format's end marker.

    Concatenated members (`cat a.gz b.gz`, pbzip2's and pzstd's output, xz's multi-stream files) are one
    image, as the command-line tools treat them.
    """

    def __init__(self, compression: Compression) -> None:
        self.compression = compression
        self.consumed = 0
        """Compressed bytes fed so far."""
        self._decompressor = create_decompressor(compression)

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Yield the image bytes `data` decodes to, at most PIECE per item."""
        self.consumed += len(data)
        zlib_style = self.compression == Compression.GZIP  # zlib keeps unread input in `unconsumed_tail`
        try:
            while True:
                decompressor = self._decompressor
                out = decompressor.decompress(data, PIECE)
                data = decompressor.unconsumed_tail if zlib_style else b""
                if out:
                    yield out
                if decompressor.eof:
                    data = decompressor.unused_data + data
                    if not data:
                        return
                    self._decompressor = create_decompressor(self.compression)  # the next member
                elif zlib_style:
                    if not data and len(out) < PIECE:
                        return
                elif decompressor.needs_input:
                    return
        except (zlib.error, lzma.LZMAError, OSError, EOFError, zstd.ZstdError) as e:  # bz2's is an OSError
            raise ValueError(
                f"the {self.compression} data is not valid after {self.consumed} compressed bytes "
                f"({type(e).__name__}: {e}): is it a {self.compression} file, and whole?"
            ) from None

    def check_end(self) -> None:
        """Raise unless the data ended at the format's end marker."""
        if not self._decompressor.eof:
            raise ValueError(
                f"the {self.compression} data ends after {self.consumed} compressed bytes, before its end marker: "
                "the image is truncated (an interrupted download or copy?)"
            )
